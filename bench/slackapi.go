package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// apiCounter stands at slacksim's door for the Web API: the daemon's
// slack.api_url points at it, it forwards every call to slacksim and counts
// what slacksim answered, by method — the calls, the 429s (slacksim keeps
// no count of the calls its rate limits refused), and when each call that
// went through was answered. Sockets are not proxied: apps.connections.open
// hands out slacksim's own websocket address.
type apiCounter struct {
	url string // the daemon's slack.api_url, with its trailing slash
	srv *http.Server
	ln  net.Listener

	mu      sync.Mutex
	calls   map[string]int
	limited map[string]int
	ok      map[string][]time.Time // HTTP 200 answers, by method
}

// apiCounts is a snapshot of an apiCounter.
type apiCounts struct {
	Calls   map[string]int
	Limited map[string]int
}

func startAPICounter(simURL string) (*apiCounter, error) {
	target, err := url.Parse(simURL)
	if err != nil {
		return nil, err
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &apiCounter{ln: ln, url: "http://" + ln.Addr().String() + "/api/",
		calls: map[string]int{}, limited: map[string]int{}, ok: map[string][]time.Time{}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
		},
		ModifyResponse: func(resp *http.Response) error {
			c.count(strings.TrimPrefix(resp.Request.URL.Path, "/api/"), resp.StatusCode)
			return nil
		},
	}
	c.srv = &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the daemon's calls then fail, and the phase says so
		}
	}()
	return c, nil
}

func (c *apiCounter) count(method string, status int) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[method]++
	switch status {
	case http.StatusTooManyRequests:
		c.limited[method]++
	case http.StatusOK:
		c.ok[method] = append(c.ok[method], now)
	}
}

func (c *apiCounter) close() { _ = c.srv.Close() }

func (c *apiCounter) snapshot() apiCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := apiCounts{Calls: map[string]int{}, Limited: map[string]int{}}
	for k, v := range c.calls {
		s.Calls[k] = v
	}
	for k, v := range c.limited {
		s.Limited[k] = v
	}
	return s
}

// since returns what was counted after the snapshot before.
func (c *apiCounter) since(before apiCounts) apiCounts {
	now := c.snapshot()
	for k, v := range before.Calls {
		if now.Calls[k] -= v; now.Calls[k] == 0 {
			delete(now.Calls, k)
		}
	}
	for k, v := range before.Limited {
		if now.Limited[k] -= v; now.Limited[k] == 0 {
			delete(now.Limited, k)
		}
	}
	return now
}

// okBetween lists when the calls of method that went through were answered,
// between from and to.
func (c *apiCounter) okBetween(method string, from, to time.Time) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Time
	for _, t := range c.ok[method] {
		if !t.Before(from) && !t.After(to) {
			out = append(out, t)
		}
	}
	return out
}
