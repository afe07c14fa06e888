package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
)

// WorkspaceActivity is what `konstruct status` shows of a workspace from
// Postgres: when it last got an answer and how its recent replies went.
type WorkspaceActivity struct {
	TenantID   string
	TenantSlug string
	TeamID     string
	TeamName   string
	Status     konstruct.WorkspaceStatus
	// LastAnswer is when a reply last ended with an answer (zero: never).
	LastAnswer time.Time
	// Answers and Errors count the replies of the recent window that
	// ended with an answer (stopped ones included), and those that ended
	// in an error (error, orphaned); refused questions are neither.
	Answers, Errors int
}

// WorkspaceActivity lists every tenant's workspaces that are not removed,
// with their activity over the last window. Each tenant is read in its own
// Row-Level Security transaction (InTenant); only the list of tenants
// comes through the definer function the admin CLI already uses.
func (s *Store) WorkspaceActivity(ctx context.Context, window time.Duration) ([]WorkspaceActivity, error) {
	tenants, err := s.ListTenants(ctx)
	if err != nil {
		return nil, err
	}
	var out []WorkspaceActivity
	for _, t := range tenants {
		err := s.InTenant(ctx, t.ID, func(tx pgx.Tx) error {
			// The answer lookup walks the (tenant_id, created_at DESC)
			// index from the newest reply: cheap however long the history.
			rows, err := tx.Query(ctx, `
				SELECT w.team_id, w.team_name, w.status,
				       (SELECT r.created_at FROM replies r
				         WHERE r.team_id = w.team_id AND r.outcome IN ('answered', 'stopped')
				         ORDER BY r.created_at DESC LIMIT 1),
				       (SELECT count(*) FROM replies r
				         WHERE r.team_id = w.team_id AND r.created_at > now() - $1 * interval '1 second'
				           AND r.outcome IN ('answered', 'stopped')),
				       (SELECT count(*) FROM replies r
				         WHERE r.team_id = w.team_id AND r.created_at > now() - $1 * interval '1 second'
				           AND r.outcome IN ('error', 'orphaned'))
				FROM workspaces w
				WHERE w.status <> 'removed'
				ORDER BY w.created_at, w.team_id`, window.Seconds())
			if err != nil {
				return err
			}
			ws, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (WorkspaceActivity, error) {
				a := WorkspaceActivity{TenantID: t.ID, TenantSlug: t.Slug}
				var last *time.Time
				err := row.Scan(&a.TeamID, &a.TeamName, &a.Status, &last, &a.Answers, &a.Errors)
				if last != nil {
					a.LastAnswer = *last
				}
				return a, err
			})
			out = append(out, ws...)
			return err
		})
		if err != nil {
			return nil, wrap(err, "workspace activity")
		}
	}
	return out, nil
}
