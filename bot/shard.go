package bot

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/konstruct/konstruct"
)

// Leases is the gateways' shared record of who holds which app's sockets
// (*queue.Queue): a registry of live gateways and, per app, the gateways
// holding its sockets, each for a lease renewed while it holds them.
type Leases interface {
	// GatewayBeat registers the gateway as live for ttl and returns every
	// live gateway's id, sorted.
	GatewayBeat(ctx context.Context, id string, ttl time.Duration) ([]string, error)
	// HoldApps renews, takes or gives up the gateway's leases on apps, in
	// one round trip: a lease is taken only while fewer than limit
	// gateways hold the app.
	HoldApps(ctx context.Context, id string, limit int, ttl time.Duration, apps []konstruct.AppLease) ([]konstruct.AppHeld, error)
	LeaveGateways(ctx context.Context, id string) error
}

// Timing of the leases: a gateway beats and renews every shardEvery; a
// gateway or lease not renewed for shardTTL is gone (its apps move to
// others within shardTTL + shardEvery).
const (
	shardEvery = 2 * time.Second
	shardTTL   = 10 * time.Second
	// gatewaysPerApp is how many gateways hold one app's sockets when
	// there are enough gateways and Slack's limit allows: two, so that
	// losing a gateway never leaves an app without a socket.
	gatewaysPerApp = 2
)

// shard decides which apps this gateway connects when several gateways
// share an install, so that an app never has more sockets than Slack
// allows (10) however many gateways run: each app is held by up to
// gatewaysPerApp gateways — chosen by rendezvous hashing among the live
// ones, so apps spread evenly and few move when a gateway comes or goes —
// and by at most leaseLimit at once, handovers included.
//
// A handover is make-before-break: a gateway that is no longer chosen
// keeps the app until enough others hold it with a socket up, then closes
// its sockets, and gives the lease up only once they are closed — so the
// holders' sockets, a reconnect's extra included, stay within Slack's 10.
// A gateway that has never reached Redis connects every app (as one alone
// would; Slack refuses sockets past 10 and the slots retry); one that loses
// Redis keeps what it holds.
type shard struct {
	m      *Manager
	leases Leases
	id     string
	limit  int // gateways that may hold one app at once
	log    *slog.Logger

	tickMu sync.Mutex // one tick at a time

	mu     sync.Mutex
	tokens map[string]string // app key → token: the apps the workspaces want
	held   map[string]bool   // app key → this gateway runs the app's sockets, under its lease
	letGo  map[string]string // app key → token: its sockets closing here, its lease still held
	known  bool              // a beat succeeded: leases decide
	live   int               // gateways live at the last beat
}

func newShard(m *Manager, leases Leases, id string) *shard {
	if id == "" {
		host, _ := os.Hostname()
		id = cmp.Or(host, "gateway") + ":" + strconv.Itoa(os.Getpid()) + ":" + strconv.FormatUint(rand.Uint64(), 36)
	}
	return &shard{
		m: m, leases: leases, id: id, limit: leaseLimit(m.cfg.ConnectionsPerWorkspace),
		log: m.log.With("gateway_id", id), tokens: map[string]string{}, held: map[string]bool{}, letGo: map[string]string{},
	}
}

// leaseLimit is how many gateways may hold one app at once: each holds
// conns sockets and, while one of them is being replaced
// (make-before-break), one more.
func leaseLimit(conns int) int {
	return max(1, MaxConnectionsPerApp/(conns+1))
}

// appKey names an app in Redis without its token.
func appKey(token string) string {
	sum := sha256.Sum256([]byte("konstruct app " + token))
	return hex.EncodeToString(sum[:8])
}

// update takes the apps the workspaces want; new ones are decided at once.
func (s *shard) update(ctx context.Context, tokens []string) {
	s.mu.Lock()
	fresh := false
	want := make(map[string]string, len(tokens))
	for _, t := range tokens {
		k := appKey(t)
		want[k] = t
		if _, ok := s.tokens[k]; !ok {
			fresh = true
		}
	}
	gone := false
	for k, t := range s.tokens {
		if _, ok := want[k]; !ok {
			gone = true
			if s.held[k] {
				s.letGo[k] = t // no workspace wants it: given up once its sockets closed
				delete(s.held, k)
			}
		}
	}
	s.tokens = want
	s.mu.Unlock()
	if fresh || gone {
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		s.tick(tctx)
		cancel()
	}
}

// allowed reports whether this gateway should run the app's sockets now.
func (s *shard) allowed(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.known || s.held[appKey(token)]
}

// run beats and renews every shardEvery until ctx ends, asking the
// manager to reconcile when the apps it should run changed.
func (s *shard) run(ctx context.Context) {
	t := time.NewTicker(shardEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Bounded: a tick that cannot finish well within the leases' TTL
		// changes nothing, and the next one tries again.
		tctx, cancel := context.WithTimeout(ctx, shardTTL/3)
		changed := s.tick(tctx)
		cancel()
		if changed {
			s.m.Trigger()
		}
	}
}

// tick beats, then takes, renews or lets go of each app's lease; it
// reports whether the set of apps this gateway should run changed.
func (s *shard) tick(ctx context.Context) (changed bool) {
	s.tickMu.Lock()
	defer s.tickMu.Unlock()
	live, err := s.leases.GatewayBeat(ctx, s.id, shardTTL)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("gateway heartbeat failed; keeping the sockets held", "error", err)
		}
		return false
	}
	if !slices.Contains(live, s.id) {
		live = append(live, s.id)
	}
	s.mu.Lock()
	tokens := maps.Clone(s.tokens)
	wasKnown := s.known
	prev := heldNow(s.held, s.known, tokens)
	letGo := maps.Clone(s.letGo)
	s.mu.Unlock()

	ready, running := s.m.appsUp()
	k := min(gatewaysPerApp, s.limit, len(live))
	var reqs []konstruct.AppLease
	var chosen []bool
	for key, tok := range tokens {
		if _, going := letGo[key]; going {
			continue
		}
		c := slices.Contains(rendezvous(key, live)[:k], s.id)
		if !c && !prev[key] {
			continue
		}
		reqs = append(reqs, konstruct.AppLease{App: key, Acquire: true, Ready: ready[tok]})
		chosen = append(chosen, c)
	}
	for key, tok := range letGo {
		// Given up once its sockets are closed; renewed until then.
		reqs = append(reqs, konstruct.AppLease{App: key, Release: !running[tok]})
	}
	res, err := s.leases.HoldApps(ctx, s.id, s.limit, shardTTL, reqs)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("renew the app leases; keeping the sockets held", "error", err)
		}
		return false
	}
	held := map[string]bool{}
	for i, r := range reqs {
		switch {
		case r.Release:
			delete(letGo, r.App)
		case i >= len(chosen): // letting go, sockets still open: renewed
		case res[i].Held && !chosen[i] && res[i].ReadyOthers >= min(k, s.limit-1):
			// Enough of the chosen gateways have it up: close the sockets,
			// then give the lease up.
			letGo[r.App] = tokens[r.App]
		default:
			held[r.App] = res[i].Held
		}
	}
	s.mu.Lock()
	changed = !wasKnown || !sameSet(prev, held)
	s.held, s.letGo, s.known, s.live = held, letGo, true, len(live)
	s.mu.Unlock()
	if changed {
		n := 0
		for _, ok := range held {
			if ok {
				n++
			}
		}
		s.log.Info("gateway shares the apps", "gateways", len(live), "apps_held", n, "apps", len(tokens))
	}
	return changed
}

// leave gives up every lease and the registration (the gateway stops,
// its sockets are closed): the other gateways take its apps at once.
func (s *shard) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.mu.Lock()
	var reqs []konstruct.AppLease
	for key, ok := range s.held {
		if ok {
			reqs = append(reqs, konstruct.AppLease{App: key, Release: true})
		}
	}
	for key := range s.letGo {
		reqs = append(reqs, konstruct.AppLease{App: key, Release: true})
	}
	s.held, s.letGo = map[string]bool{}, map[string]string{}
	s.mu.Unlock()
	_, _ = s.leases.HoldApps(ctx, s.id, s.limit, shardTTL, reqs)
	_ = s.leases.LeaveGateways(ctx, s.id)
}

// rendezvous orders the gateways for an app, the first the most chosen:
// highest random weight, so each gateway's share moves little when
// another comes or goes.
func rendezvous(key string, live []string) []string {
	out := slices.Clone(live)
	score := func(id string) uint64 {
		h := fnv.New64a()
		_, _ = h.Write([]byte(key))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(id))
		return mix(h.Sum64())
	}
	slices.SortFunc(out, func(a, b string) int { return cmp.Compare(score(b), score(a)) })
	return out
}

// mix spreads FNV's output (its last bytes barely move the high bits).
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// heldNow is the held set as the apps see it now: before the leases
// decided, every app runs, and counts as held.
func heldNow(held map[string]bool, known bool, tokens map[string]string) map[string]bool {
	out := map[string]bool{}
	for k := range tokens {
		out[k] = !known || held[k]
	}
	return out
}

func sameSet(a, b map[string]bool) bool {
	for k, v := range a {
		if v != b[k] {
			return false
		}
	}
	for k, v := range b {
		if v != a[k] {
			return false
		}
	}
	return true
}
