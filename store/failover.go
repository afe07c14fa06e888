package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// What keeps the store working through a PostgreSQL failover (README,
// "Scale out"). database.url may name every node of an HA setup with
// target_session_attrs=read-write: pgx tries the hosts in order and keeps
// the first that takes writes, the pool drops a connection that fails and
// opens the next one the same way, so a promoted standby is found without
// a restart. What pgx leaves to its caller, done here:
//
//   - A primary that vanished without closing its connections (its machine
//     died, the network parted): a connection with a request out would wait
//     for TCP to give up, a quarter of an hour. TCP_USER_TIMEOUT ends it
//     after deadPeer of unacknowledged data; keepalives end an idle one
//     after about as long.
//   - A connect to such a host would wait as long: unless the URL sets
//     connect_timeout, each host gets connectTimeout.
//   - The LISTEN connection waits for notifications and sends nothing: every
//     listenCheck without one it asks the server, within listenPing, that
//     the connection still works (waitNotification), and reconnects if not.
const (
	deadPeer       = 20 * time.Second
	connectTimeout = 10 * time.Second
	listenCheck    = 15 * time.Second
	listenPing     = 5 * time.Second
)

// tuneForFailover sets the connect timeout and the dialer described above.
func tuneForFailover(cfg *pgxpool.Config) {
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = connectTimeout
	}
	d := &net.Dialer{
		Timeout: cc.ConnectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: deadPeer / 2, Interval: deadPeer / 8, Count: 4,
		},
		Control: func(network, _ string, c syscall.RawConn) error {
			if !strings.HasPrefix(network, "tcp") {
				return nil // a unix socket: no peer to lose
			}
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = setUserTimeout(int(fd), deadPeer)
			})
			return errors.Join(err, serr)
		},
	}
	cc.DialFunc = d.DialContext // the fallback hosts' too
}

// waitNotification waits for the next notification on a LISTEN
// connection, checking every listenCheck that the connection still works.
func waitNotification(ctx context.Context, conn *pgx.Conn) (*pgconn.Notification, error) {
	for {
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err == nil || ctx.Err() != nil || wctx.Err() == nil {
			return n, err
		}
		// Quiet for listenCheck: is anyone there?
		pctx, cancel := context.WithTimeout(ctx, listenPing)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("the connection does not answer: %w", err)
		}
	}
}
