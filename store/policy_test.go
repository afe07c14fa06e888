package store_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/store"
)

func list(ids ...string) *[]string { return &ids }

// TestPolicyPatchChangesOnlyWhatIsGiven: a tenant that never set a policy
// has today's behaviour; a patch changes its fields and leaves the others;
// an empty list clears one; each tenant has its own.
func TestPolicyPatchChangesOnlyWhatIsGiven(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx := context.Background()
	a, _ := st.CreateTenant(ctx, "Alpha", "")
	b, _ := st.CreateTenant(ctx, "Beta", "")

	p, err := st.Policy(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := konstruct.DefaultPolicy(a.ID); !reflect.DeepEqual(p, want) {
		t.Fatalf("policy never set = %+v, want the default %+v", p, want)
	}
	if !p.AllowsChannel("C1") || !p.AllowsUser("U1") || !p.DMs || p.Follow != konstruct.FollowAuto || p.FollowTTL != 0 {
		t.Fatalf("default policy is not today's behaviour: %+v", p)
	}

	off, mention, ttl, day := false, konstruct.FollowMention, 45*time.Minute, int64(1000)
	p, err = st.SetPolicy(ctx, a.ID, konstruct.PolicyPatch{Channels: list("C1", "C2"), DenyChannels: list("C2"), DMs: &off})
	if err != nil {
		t.Fatal(err)
	}
	if !p.AllowsChannel("C1") || p.AllowsChannel("C2") || p.AllowsChannel("C3") || p.DMs || p.UpdatedAt.IsZero() {
		t.Fatalf("after the first patch: %+v (deny beats allow; others not allowed)", p)
	}
	p, err = st.SetPolicy(ctx, a.ID, konstruct.PolicyPatch{Users: list("U1"), Follow: &mention, FollowTTL: &ttl, TokensPerDay: &day})
	if err != nil {
		t.Fatal(err)
	}
	want := konstruct.Policy{TenantID: a.ID, Channels: []string{"C1", "C2"}, DenyChannels: []string{"C2"}, Users: []string{"U1"},
		DMs: false, Follow: konstruct.FollowMention, FollowTTL: ttl, TokensPerDay: 1000, UpdatedAt: p.UpdatedAt}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("second patch kept the first's fields?\n got %+v\nwant %+v", p, want)
	}
	// Read back as the daemon reads it.
	if got, err := st.Policy(ctx, a.ID); err != nil || !reflect.DeepEqual(got.Channels, want.Channels) || got.FollowTTL != ttl || got.TokensPerDay != 1000 {
		t.Fatalf("read back %+v, %v", got, err)
	}
	// Empty lists clear: every channel again, no denied channel.
	p, err = st.SetPolicy(ctx, a.ID, konstruct.PolicyPatch{Channels: list(), DenyChannels: list()})
	if err != nil {
		t.Fatal(err)
	}
	if p.Channels != nil || p.DenyChannels != nil || !p.AllowsChannel("C9") || !reflect.DeepEqual(p.Users, []string{"U1"}) {
		t.Fatalf("after clearing: %+v", p)
	}
	// The other tenant is untouched.
	if pb, err := st.Policy(ctx, b.ID); err != nil || !reflect.DeepEqual(pb, konstruct.DefaultPolicy(b.ID)) {
		t.Fatalf("other tenant's policy: %+v, %v", pb, err)
	}
	// Under RLS, a tenant's transaction sees its own row only.
	err = st.InTenant(ctx, b.ID, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM policies").Scan(&n); err != nil || n != 0 {
			t.Errorf("tenant b sees %d policies (%v)", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.SetPolicy(ctx, "00000000-0000-4000-8000-000000000009", konstruct.PolicyPatch{DMs: &off})
	if konstruct.ErrorCode(err) == "" {
		t.Fatal("a policy for a tenant that does not exist was stored")
	}
}

// TestPolicyChangeNotifiesAndInvalidates: a running daemon hears of a
// policy change (LISTEN), and its cache serves the new one at once; the
// TTL bounds a lost notification.
func TestPolicyChangeNotifiesAndInvalidates(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ten, _ := st.CreateTenant(ctx, "Acme", "")
	cache := store.NewPolicyCache(st, time.Hour, nil)

	payloads := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		done <- st.Listen(ctx, map[string]func(string){store.PoliciesChannel: func(p string) {
			cache.Invalidate(p)
			payloads <- p
		}})
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case p := <-payloads:
			return p
		case <-time.After(10 * time.Second):
			t.Fatalf("no notification after %s", what)
			return ""
		}
	}
	if p := next("connect"); p != "" {
		t.Fatalf("connect called the handler with %q, want \"\" (anything may have changed)", p)
	}
	if p, _ := cache.Policy(ctx, ten.ID); !p.DMs {
		t.Fatal("cached default has DMs off")
	}
	off := false
	if _, err := st.SetPolicy(ctx, ten.ID, konstruct.PolicyPatch{DMs: &off}); err != nil {
		t.Fatal(err)
	}
	if p := next("set"); p != ten.ID {
		t.Fatalf("notification payload %q, want the tenant id %s", p, ten.ID)
	}
	if p, err := cache.Policy(ctx, ten.ID); err != nil || p.DMs {
		t.Fatalf("after the notification the cache serves %+v, %v", p, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Listen returned %v", err)
	}
}

// fakePolicies fails on demand.
type fakePolicies struct {
	p    konstruct.Policy
	err  error
	hits int
}

func (f *fakePolicies) Policy(context.Context, string) (konstruct.Policy, error) {
	f.hits++
	return f.p, f.err
}

func TestPolicyCacheTTLAndOutage(t *testing.T) {
	t.Parallel()
	src := &fakePolicies{p: konstruct.Policy{TenantID: "t", TokensPerDay: 5}}
	c := store.NewPolicyCache(src, 20*time.Millisecond, nil)
	ctx := context.Background()
	for range 3 {
		if _, err := c.Policy(ctx, "t"); err != nil {
			t.Fatal(err)
		}
	}
	if src.hits != 1 {
		t.Fatalf("%d reads within the TTL, want 1", src.hits)
	}
	time.Sleep(30 * time.Millisecond) // the TTL itself is what is tested
	src.p.TokensPerDay = 6
	if p, _ := c.Policy(ctx, "t"); p.TokensPerDay != 6 || src.hits != 2 {
		t.Fatalf("after the TTL: %+v (%d reads)", p, src.hits)
	}
	// Postgres fails: the last policy read is served, not an error.
	time.Sleep(30 * time.Millisecond)
	src.err = errors.New("connection refused")
	if p, err := c.Policy(ctx, "t"); err != nil || p.TokensPerDay != 6 {
		t.Fatalf("during an outage: %+v, %v", p, err)
	}
	// A tenant never read gets the error.
	if _, err := c.Policy(ctx, "other"); err == nil {
		t.Fatal("unknown tenant during an outage: no error")
	}
}
