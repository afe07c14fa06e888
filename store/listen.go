package store

import (
	"context"
	"fmt"
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
	backoff := 250 * time.Millisecond
	for {
		listening, err := s.listen(ctx, fn)
		if ctx.Err() != nil {
			return nil
		}
		if listening {
			backoff = 250 * time.Millisecond
		}
		s.logger.Warn("workspace notifications interrupted; reconnecting", "error", err, "retry_in", backoff)
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
func (s *Store) listen(ctx context.Context, fn func()) (listening bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+WorkspacesChannel); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	fn()
	for {
		if _, err := waitNotification(ctx, conn); err != nil {
			return true, fmt.Errorf("wait for notification: %w", err)
		}
		fn()
	}
}
