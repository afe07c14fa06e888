package router

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/konstruct/konstruct"
)

// tenantCache remembers team → workspace answers (found or not) for a short
// TTL, so a removed workspace is not served for longer than that even when
// nobody calls invalidate.
type tenantCache struct {
	src TenantResolver
	ttl time.Duration
	now func() time.Time // the router's clock (Config.Now)
	log *slog.Logger

	mu      sync.Mutex
	gen     uint64 // bumped by invalidate: fetches started before it are not stored
	entries map[string]tenantEntry
}

type tenantEntry struct {
	ws    konstruct.Workspace
	found bool
	at    time.Time
}

func newTenantCache(src TenantResolver, ttl time.Duration, now func() time.Time, log *slog.Logger) *tenantCache {
	return &tenantCache{src: src, ttl: ttl, now: now, log: log, entries: map[string]tenantEntry{}}
}

func (c *tenantCache) invalidate() {
	c.mu.Lock()
	c.gen++
	clear(c.entries)
	c.mu.Unlock()
}

// get returns the active workspace of a team, ENOTFOUND when there is none.
func (c *tenantCache) get(ctx context.Context, teamID string) (konstruct.Workspace, error) {
	c.mu.Lock()
	e, ok := c.entries[teamID]
	gen := c.gen
	c.mu.Unlock()
	if ok && c.now().Sub(e.at) < c.ttl {
		return e.result(teamID)
	}
	if c.src == nil {
		return konstruct.Workspace{}, konstruct.Errorf(konstruct.ENOTFOUND, "no tenant resolver")
	}
	ws, err := c.src.TenantForTeam(ctx, teamID)
	found := err == nil && (ws.Status == "" || ws.Status == konstruct.WorkspaceActive)
	if err != nil && konstruct.ErrorCode(err) != konstruct.ENOTFOUND {
		if ok {
			// Postgres fails: the last answer beats holding every message back.
			c.log.Warn("tenant lookup failed; serving the last answer", "team_id", teamID, "error", err, "age", c.now().Sub(e.at).Round(time.Second))
			return e.result(teamID)
		}
		return konstruct.Workspace{}, err
	}
	e = tenantEntry{ws: ws, found: found, at: c.now()}
	c.mu.Lock()
	if c.gen == gen {
		if len(c.entries) >= 100000 {
			clear(c.entries)
		}
		c.entries[teamID] = e
	}
	c.mu.Unlock()
	return e.result(teamID)
}

func (e tenantEntry) result(teamID string) (konstruct.Workspace, error) {
	if !e.found {
		return konstruct.Workspace{}, konstruct.Errorf(konstruct.ENOTFOUND, "workspace %s is not installed", teamID)
	}
	return e.ws, nil
}
