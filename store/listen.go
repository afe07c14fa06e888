package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// WorkspacesChannel is the NOTIFY channel a trigger on workspaces signals.
const WorkspacesChannel = "konstruct_workspaces"

// ListenWorkspaces calls fn each time a workspace is added, removed,
// re-keyed or changes status, from a dedicated connection (not the pool's).
// It also calls fn each time the listener (re)connects, the first time
// included: notifications sent while it was not listening are lost, and a
// caller that reconciles on fn then misses nothing. It reconnects with
// backoff after a failure and returns nil when ctx ends.
func (s *Store) ListenWorkspaces(ctx context.Context, fn func()) error {
	return s.Listen(ctx, map[string]func(string){WorkspacesChannel: func(string) { fn() }})
}

// Listen LISTENs on every channel of handlers (WorkspacesChannel,
// PoliciesChannel) from one dedicated connection, and calls a channel's
// handler with the payload of each of its notifications. Each time the
// listener (re)connects, the first time included, every handler is called
// with "": notifications sent while it was not listening are lost, so ""
// means "anything may have changed". It reconnects with backoff after a
// failure and returns nil when ctx ends.
func (s *Store) Listen(ctx context.Context, handlers map[string]func(payload string)) error {
	backoff := 250 * time.Millisecond
	for {
		listening, err := s.listen(ctx, handlers)
		if ctx.Err() != nil {
			return nil
		}
		if listening {
			backoff = 250 * time.Millisecond
		}
		s.logger.Warn("database notifications interrupted; reconnecting", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// listen holds one LISTEN connection until ctx ends or the connection
// fails; listening reports whether LISTEN succeeded.
func (s *Store) listen(ctx context.Context, handlers map[string]func(string)) (listening bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	channels := slices.Sorted(maps.Keys(handlers))
	for _, ch := range channels {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return false, fmt.Errorf("listen %s: %w", ch, err)
		}
	}
	for _, ch := range channels {
		handlers[ch]("")
	}
	for {
		n, err := waitNotification(ctx, conn)
		if err != nil {
			return true, fmt.Errorf("wait for notification: %w", err)
		}
		if h := handlers[n.Channel]; h != nil {
			h(n.Payload)
		}
	}
}
