package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLLMSimAnswersCanned: `konstruct llmsim` prints where it listens and
// serves the OpenAI-compatible API with answers that say they are canned,
// until interrupted.
func TestLLMSimAnswersCanned(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"llmsim"}, func(string) string { return "" }, strings.NewReader(""), out, io.Discard)
	}()
	var base string
	waitFor(t, 10*time.Second, "base_url=", func() bool {
		for line := range strings.SplitSeq(out.String(), "\n") {
			if u, ok := strings.CutPrefix(line, "base_url="); ok {
				base = u
			}
		}
		return base != "" && strings.Contains(out.String(), "model=echo\n")
	})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"chat/completions",
		strings.NewReader(`{"model":"echo","messages":[{"role":"user","content":"is anyone there?"}]}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "canned echo") || !strings.Contains(string(body), "is anyone there?") {
		t.Errorf("chat completion: %d %s", resp.StatusCode, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("llmsim returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("llmsim did not stop when interrupted")
	}
}
