package store_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/migrations"
	"github.com/konstruct/konstruct/secret"
	"github.com/konstruct/konstruct/store"
)

// PostgreSQL HA as the store sees it: database.url names every node with
// target_session_attrs=read-write (Patroni, pg_auto_failover), pgx takes
// the node that accepts writes, and after a failover the store — its pool
// and its LISTEN connection — finds the new primary without a restart.
// Two clusters of the test's own stand for the nodes: a primary, and a
// standby that is read-only until promoted.

// haPair is a primary and a read-only standby, each with the same
// database and roles, migrated (trust on loopback: no passwords).
type haPair struct {
	primary, standby *testenv.PGServer
	db               string
}

func newHAPair(t *testing.T) *haPair {
	t.Helper()
	p := &haPair{primary: testenv.StartPGServer(t), standby: testenv.StartPGServer(t), db: "kt_ha"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range []*testenv.PGServer{p.primary, p.standby} {
		db, err := store.Provision(ctx, s.AdminURL, p.db)
		if err != nil {
			t.Fatal(err)
		}
		if err := migrations.Up(ctx, db.OwnerURL, db.RuntimeURL, nil); err != nil {
			t.Fatal(err)
		}
	}
	p.standby.SetReadOnly(true)
	return p
}

// url is the runtime role's URL over hosts (host:port each).
func (p *haPair) url(extra string, hosts ...string) string {
	return "postgres://" + p.db + "_app@" + strings.Join(hosts, ",") + "/" + p.db +
		"?sslmode=disable&target_session_attrs=read-write" + extra
}

func addr(s *testenv.PGServer) string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	box, err := secret.NewBox(testenv.SecretKey())
	if err != nil {
		t.Fatal(err)
	}
	return testenv.OpenStore(t, url, box)
}

// serverPort is the port of the server the store's pool writes to.
func serverPort(ctx context.Context, st *store.Store) (int, error) {
	var port int
	err := st.Pool().QueryRow(ctx, "SELECT inet_server_port()").Scan(&port)
	return port, err
}

// TestSeveralHostsReachThePrimary: the first host named is down, or a
// read-only standby: the store connects to the primary behind it.
func TestSeveralHostsReachThePrimary(t *testing.T) {
	t.Parallel()
	p := newHAPair(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	_ = ln.Close() // nobody listens there now
	for name, hosts := range map[string][]string{
		"first host down":      {down, addr(p.primary)},
		"first host read-only": {addr(p.standby), addr(p.primary)},
	} {
		t.Run(name, func(t *testing.T) {
			st := openStore(t, p.url("", hosts...))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := st.CreateTenant(ctx, "Acme "+name, ""); err != nil {
				t.Fatalf("write: %v", err)
			}
			if port, err := serverPort(ctx, st); err != nil || port != p.primary.Port {
				t.Fatalf("writes go to port %d (%v), want the primary's %d", port, err, p.primary.Port)
			}
		})
	}
}

// TestFailoverWithoutRestart: the primary stops answering without closing
// anything (its machine is gone: a proxy in front of it stops forwarding)
// and the standby is promoted. Without a restart the store writes to the
// new primary, and its LISTEN connection — which sends nothing, so nothing
// tells it the old one is gone — reconnects there: a workspace change
// made on the new primary reaches the daemon.
func TestFailoverWithoutRestart(t *testing.T) {
	t.Parallel()
	p := newHAPair(t)
	px := startProxy(t, addr(p.primary))
	st := openStore(t, p.url("&connect_timeout=2", px.addr(), addr(p.standby)))

	var calls atomic.Int64
	lctx, stopListen := context.WithCancel(context.Background())
	listened := make(chan struct{})
	go func() {
		defer close(listened)
		_ = st.ListenWorkspaces(lctx, func() { calls.Add(1) })
	}()
	t.Cleanup(func() { stopListen(); <-listened })
	waitFor(t, 20*time.Second, "the listener", func() bool { return calls.Load() >= 1 })

	ctx := context.Background()
	write := func(name string) error {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := st.CreateTenant(wctx, name, "")
		return err
	}
	if err := write("before"); err != nil {
		t.Fatal(err)
	}

	// The primary vanishes; the standby is promoted.
	px.freeze()
	p.standby.SetReadOnly(false)
	start := time.Now()
	before := calls.Load()

	n := 0
	waitFor(t, 60*time.Second, "a write on the new primary", func() bool {
		n++
		return write(fmt.Sprintf("after %d", n)) == nil
	})
	wrote := time.Since(start)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	port, err := serverPort(pctx, st)
	cancel()
	if err != nil || port != p.standby.Port {
		t.Fatalf("writes go to port %d (%v), want the promoted standby's %d", port, err, p.standby.Port)
	}

	waitFor(t, 60*time.Second, "the listener on the new primary", func() bool { return calls.Load() > before })
	relistened := time.Since(start)
	// A change on the new primary reaches the listener.
	notified := calls.Load()
	conn, err := pgx.Connect(ctx, strings.Replace(p.standby.AdminURL, "/postgres?", "/"+p.db+"?", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "NOTIFY "+store.WorkspacesChannel); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	waitFor(t, 10*time.Second, "a notification from the new primary", func() bool { return calls.Load() > notified })
	t.Logf("writes on the new primary after %v (%d attempts), the listener back after %v", wrote.Round(100*time.Millisecond), n, relistened.Round(100*time.Millisecond))
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// proxy forwards TCP to a target until frozen; then it forwards nothing
// more, closes nothing, and holds new connections unanswered — a machine
// that is gone, as its peers see it.
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	thaw   chan struct{} // closed at cleanup
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, thaw: make(chan struct{})}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		close(p.thaw)
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

func (p *proxy) isFrozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen
}

func (p *proxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		if p.isFrozen() {
			continue // held, never answered
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.track(b)
		p.wg.Go(func() { p.pipe(b, c) })
		p.wg.Go(func() { p.pipe(c, b) })
	}
}

// pipe copies src to dst while not frozen; frozen, it reads and drops
// nothing, delivering nothing, until cleanup.
func (p *proxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.isFrozen() {
			<-p.thaw
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
