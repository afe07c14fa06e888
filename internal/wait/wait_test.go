package wait

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	t.Parallel()
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("an uncancelled sleep reported false")
	}
	if !Sleep(context.Background(), 0) {
		t.Error("a zero sleep on a live context reported false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) || Sleep(ctx, 0) {
		t.Error("a sleep on an ended context reported true")
	}
}
