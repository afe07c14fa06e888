package store

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
)

// PoliciesChannel is the NOTIFY channel a trigger on policies signals, with
// the tenant id as payload.
const PoliciesChannel = "konstruct_policies"

// Policy is the tenant's policy: the default one (konstruct.DefaultPolicy)
// when it never set any.
func (s *Store) Policy(ctx context.Context, tenantID string) (konstruct.Policy, error) {
	var p konstruct.Policy
	err := s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		var err error
		p, err = readPolicy(ctx, tx, tenantID, false)
		return err
	})
	if err != nil {
		return konstruct.Policy{}, wrap(err, "policy")
	}
	return p, nil
}

// SetPolicy changes the settings patch names and leaves the others as they
// are, creating the tenant's row (from the default policy) when it has
// none, and returns the policy that holds now. Running daemons hear of it
// through PoliciesChannel.
func (s *Store) SetPolicy(ctx context.Context, tenantID string, patch konstruct.PolicyPatch) (konstruct.Policy, error) {
	var p konstruct.Policy
	err := s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO policies (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING`, tenantID); err != nil {
			return err
		}
		cur, err := readPolicy(ctx, tx, tenantID, true)
		if err != nil {
			return err
		}
		p = patch.Apply(cur)
		return tx.QueryRow(ctx, `
			UPDATE policies SET channels = $2, deny_channels = $3, users = $4, dms = $5, follow_threads = $6,
			       follow_ttl_s = $7, tokens_per_day = $8, tokens_per_month = $9, updated_at = now()
			WHERE tenant_id = $1
			RETURNING updated_at`,
			tenantID, nonNil(p.Channels), nonNil(p.DenyChannels), nonNil(p.Users), p.DMs, string(p.Follow),
			int64(p.FollowTTL/time.Second), p.TokensPerDay, p.TokensPerMonth).Scan(&p.UpdatedAt)
	})
	if pgCode(err) == pgForeignKey {
		return konstruct.Policy{}, &konstruct.Error{Code: konstruct.ENOTFOUND, Message: "no tenant " + tenantID, Err: err}
	}
	if err != nil {
		return konstruct.Policy{}, wrap(err, "set policy")
	}
	return p, nil
}

// readPolicy reads the tenant's row in tx (locking it for an update when
// forUpdate), or the default policy when there is none.
func readPolicy(ctx context.Context, tx pgx.Tx, tenantID string, forUpdate bool) (konstruct.Policy, error) {
	q := `SELECT channels, deny_channels, users, dms, follow_threads, follow_ttl_s, tokens_per_day, tokens_per_month, updated_at
	      FROM policies WHERE tenant_id = $1`
	if forUpdate {
		q += ` FOR UPDATE`
	}
	p := konstruct.Policy{TenantID: tenantID}
	var follow string
	var ttl int64
	err := tx.QueryRow(ctx, q, tenantID).Scan(&p.Channels, &p.DenyChannels, &p.Users, &p.DMs, &follow, &ttl,
		&p.TokensPerDay, &p.TokensPerMonth, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return konstruct.DefaultPolicy(tenantID), nil
	}
	if err != nil {
		return konstruct.Policy{}, err
	}
	p.Follow = konstruct.FollowMode(follow)
	p.FollowTTL = time.Duration(ttl) * time.Second
	if len(p.Channels) == 0 {
		p.Channels = nil
	}
	if len(p.DenyChannels) == 0 {
		p.DenyChannels = nil
	}
	if len(p.Users) == 0 {
		p.Users = nil
	}
	return p, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// PolicySource gives a tenant's policy (*Store).
type PolicySource interface {
	Policy(ctx context.Context, tenantID string) (konstruct.Policy, error)
}

// PolicyCache serves tenants' policies from memory: each is read again
// after TTL, or at once after Invalidate (which the daemon calls when
// PoliciesChannel names the tenant), so that a change reaches a running
// daemon within TTL even when a notification is lost. While Postgres
// fails, the last policy read is served (a tenant never read gets the
// error). The router and the workers of a process share one.
type PolicyCache struct {
	src PolicySource
	ttl time.Duration
	log *slog.Logger

	mu      sync.Mutex
	gen     uint64 // bumped by Invalidate: reads started before it are not stored
	entries map[string]cachedPolicy
}

type cachedPolicy struct {
	p  konstruct.Policy
	at time.Time
}

// NewPolicyCache returns a cache over src (ttl 0: 5 s).
func NewPolicyCache(src PolicySource, ttl time.Duration, log *slog.Logger) *PolicyCache {
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &PolicyCache{src: src, ttl: ttl, log: log, entries: map[string]cachedPolicy{}}
}

// Policy is the tenant's policy, from the cache when fresh.
func (c *PolicyCache) Policy(ctx context.Context, tenantID string) (konstruct.Policy, error) {
	c.mu.Lock()
	e, ok := c.entries[tenantID]
	gen := c.gen
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.ttl {
		return e.p, nil
	}
	p, err := c.src.Policy(ctx, tenantID)
	if err != nil {
		if ok && ctx.Err() == nil {
			c.log.Warn("policy lookup failed; serving the last one read", "tenant_id", tenantID, "error", err, "age", time.Since(e.at).Round(time.Second))
			return e.p, nil
		}
		return konstruct.Policy{}, err
	}
	c.mu.Lock()
	if c.gen == gen {
		if len(c.entries) >= 100000 {
			clear(c.entries)
		}
		c.entries[tenantID] = cachedPolicy{p: p, at: time.Now()}
	}
	c.mu.Unlock()
	return p, nil
}

// Invalidate forgets the tenant's cached policy ("" forgets every one).
func (c *PolicyCache) Invalidate(tenantID string) {
	c.mu.Lock()
	c.gen++
	if tenantID == "" {
		clear(c.entries)
	} else {
		delete(c.entries, tenantID)
	}
	c.mu.Unlock()
}
