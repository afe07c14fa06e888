package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
)

var slugPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Slugify derives a tenant slug from a name: lower-case letters and digits,
// other runs of characters collapsed to one hyphen.
func Slugify(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(r)
			dash = false
			continue
		}
		dash = true
	}
	s := b.String()
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-")
	}
	return s
}

// CreateTenant adds a tenant. An empty slug is derived from name; a slug
// already taken is ECONFLICT.
func (s *Store) CreateTenant(ctx context.Context, name, slug string) (konstruct.Tenant, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return konstruct.Tenant{}, konstruct.Errorf(konstruct.EINVALID, "a tenant needs a name")
	}
	if slug == "" {
		slug = Slugify(name)
	}
	slug = strings.ToLower(strings.TrimSpace(slug))
	if !slugPattern.MatchString(slug) || uuidPattern.MatchString(slug) {
		return konstruct.Tenant{}, konstruct.Errorf(konstruct.EINVALID,
			"slug %q: use 1-63 lower-case letters, digits and hyphens, starting with a letter or digit", slug)
	}
	// RLS's WITH CHECK wants the new row's id to be the transaction's
	// tenant, so the id is chosen before the insert.
	t := konstruct.Tenant{ID: newUUID(), Slug: slug, Name: name}
	err := s.InTenant(ctx, t.ID, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx,
			`INSERT INTO tenants (id, slug, name) VALUES ($1, $2, $3) RETURNING created_at`,
			t.ID, t.Slug, t.Name).Scan(&t.CreatedAt)
	})
	if pgCode(err) == pgUniqueViolation {
		return konstruct.Tenant{}, &konstruct.Error{Code: konstruct.ECONFLICT, Message: fmt.Sprintf("a tenant with slug %q already exists", slug), Err: err}
	}
	if err != nil {
		return konstruct.Tenant{}, wrap(err, "create tenant")
	}
	return t, nil
}

// ListTenants lists every tenant (admin CLI), oldest first.
func (s *Store) ListTenants(ctx context.Context) ([]konstruct.Tenant, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, slug, name, created_at FROM konstruct_tenants()`)
	if err != nil {
		return nil, wrap(err, "list tenants")
	}
	ts, err := pgx.CollectRows(rows, scanTenant)
	return ts, wrap(err, "list tenants")
}

// ResolveTenant finds a tenant by id or slug; ENOTFOUND if none.
func (s *Store) ResolveTenant(ctx context.Context, idOrSlug string) (konstruct.Tenant, error) {
	idOrSlug = strings.TrimSpace(idOrSlug)
	rows, err := s.pool.Query(ctx, `SELECT id, slug, name, created_at FROM konstruct_tenant($1)`, idOrSlug)
	if err != nil {
		return konstruct.Tenant{}, wrap(err, "resolve tenant")
	}
	t, err := pgx.CollectExactlyOneRow(rows, scanTenant)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return konstruct.Tenant{}, &konstruct.Error{Code: konstruct.ENOTFOUND, Message: fmt.Sprintf("no tenant with id or slug %q", idOrSlug), Err: err}
		}
		return konstruct.Tenant{}, wrap(err, "resolve tenant")
	}
	return t, nil
}

func scanTenant(row pgx.CollectableRow) (konstruct.Tenant, error) {
	var t konstruct.Tenant
	err := row.Scan(&t.ID, &t.Slug, &t.Name, &t.CreatedAt)
	return t, err
}

// SetAgent creates or replaces the tenant's active agent.
func (s *Store) SetAgent(ctx context.Context, a konstruct.Agent) (konstruct.Agent, error) {
	a.Name = strings.TrimSpace(a.Name)
	if a.Name == "" {
		return konstruct.Agent{}, konstruct.Errorf(konstruct.EINVALID, "an agent needs a name")
	}
	providers := make([]string, 0, len(a.Providers))
	for _, p := range a.Providers {
		if p = strings.TrimSpace(p); p == "" {
			return konstruct.Agent{}, konstruct.Errorf(konstruct.EINVALID, "an agent's providers must be names, not empty")
		}
		if !slices.Contains(providers, p) {
			providers = append(providers, p)
		}
	}
	a.Providers = providers
	a.Active = true
	err := s.InTenant(ctx, a.TenantID, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `
			INSERT INTO agents (tenant_id, name, role, persona, instructions, model, providers, active)
			VALUES ($1, $2, $3, $4, $5, $6, $7, true)
			ON CONFLICT (tenant_id) WHERE active DO UPDATE SET
				name = EXCLUDED.name, role = EXCLUDED.role, persona = EXCLUDED.persona,
				instructions = EXCLUDED.instructions, model = EXCLUDED.model,
				providers = EXCLUDED.providers, updated_at = now()
			RETURNING id, created_at, updated_at`,
			a.TenantID, a.Name, a.Role, a.Persona, a.Instructions, a.Model, a.Providers).Scan(&a.ID, &a.CreatedAt, &a.UpdatedAt)
	})
	if pgCode(err) == pgForeignKey {
		return konstruct.Agent{}, &konstruct.Error{Code: konstruct.ENOTFOUND, Message: fmt.Sprintf("no tenant %q", a.TenantID), Err: err}
	}
	if err != nil {
		return konstruct.Agent{}, wrap(err, "set agent")
	}
	return a, nil
}

// ActiveAgent is the tenant's active agent; ENOTFOUND if none is set.
func (s *Store) ActiveAgent(ctx context.Context, tenantID string) (konstruct.Agent, error) {
	var a konstruct.Agent
	err := s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `
			SELECT id, tenant_id, name, role, persona, instructions, model, providers, active, created_at, updated_at
			FROM agents WHERE active`).Scan(&a.ID, &a.TenantID, &a.Name, &a.Role, &a.Persona,
			&a.Instructions, &a.Model, &a.Providers, &a.Active, &a.CreatedAt, &a.UpdatedAt)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return konstruct.Agent{}, &konstruct.Error{Code: konstruct.ENOTFOUND,
			Message: "the tenant has no agent yet: set one with `konstruct agent set`", Err: err}
	}
	if err != nil {
		return konstruct.Agent{}, wrap(err, "active agent")
	}
	return a, nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
