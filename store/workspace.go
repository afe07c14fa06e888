package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/secret"
)

// The token columns, which each ciphertext is bound to with its row.
const (
	appTokenColumn = "app_token_enc"
	botTokenColumn = "bot_token_enc"
)

// tokenAAD is the associated data that binds a token's ciphertext to its
// place: the tenant and team of its row, and its column. A ciphertext copied
// to another workspace's row, or from one column to the other, no longer
// opens (secret.Box). The key_id column tells bound ciphertexts ("v2:…")
// from those sealed before, which open without it until `workspace rekey`.
func tokenAAD(tenantID, teamID, column string) []byte {
	return []byte("konstruct/workspaces/" + tenantID + "/" + teamID + "/" + column)
}

func (s *Store) needBox(what string) error {
	if s.box == nil {
		return konstruct.Errorf(konstruct.EINVALID, "%s needs secret_key (base64 of 32 bytes), which encrypts Slack tokens at rest", what)
	}
	return nil
}

// AddWorkspace stores a workspace with its tokens sealed, status active. A
// team already registered to the same tenant gets its tokens and details
// updated; one registered to another tenant is ECONFLICT.
func (s *Store) AddWorkspace(ctx context.Context, w konstruct.Workspace) (konstruct.Workspace, error) {
	if err := s.needBox("adding a workspace"); err != nil {
		return konstruct.Workspace{}, err
	}
	w.TeamID = strings.TrimSpace(w.TeamID)
	switch {
	case w.TeamID == "":
		return konstruct.Workspace{}, konstruct.Errorf(konstruct.EINVALID, "a workspace needs a team id")
	case w.AppToken == "" || w.BotToken == "":
		return konstruct.Workspace{}, konstruct.Errorf(konstruct.EINVALID, "a workspace needs both an app token and a bot token")
	}
	if cur, err := s.TenantForTeam(ctx, w.TeamID); err == nil && cur.TenantID != w.TenantID {
		return konstruct.Workspace{}, konstruct.Errorf(konstruct.ECONFLICT, "team %s is already registered to another tenant", w.TeamID)
	} else if err != nil && konstruct.ErrorCode(err) != konstruct.ENOTFOUND {
		return konstruct.Workspace{}, err
	}
	appEnc, keyID, err := s.box.Seal([]byte(w.AppToken), tokenAAD(w.TenantID, w.TeamID, appTokenColumn))
	if err != nil {
		return konstruct.Workspace{}, fmt.Errorf("seal app token: %w", err)
	}
	botEnc, _, err := s.box.Seal([]byte(w.BotToken), tokenAAD(w.TenantID, w.TeamID, botTokenColumn))
	if err != nil {
		return konstruct.Workspace{}, fmt.Errorf("seal bot token: %w", err)
	}
	w.Status = konstruct.WorkspaceActive
	err = s.InTenant(ctx, w.TenantID, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `
			INSERT INTO workspaces (tenant_id, team_id, team_name, enterprise_id, app_id, bot_user_id, bot_id,
			                        app_token_enc, bot_token_enc, key_id, status)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'active')
			ON CONFLICT (team_id) DO UPDATE SET
				team_name = EXCLUDED.team_name, enterprise_id = EXCLUDED.enterprise_id,
				app_id = EXCLUDED.app_id, bot_user_id = EXCLUDED.bot_user_id, bot_id = EXCLUDED.bot_id,
				app_token_enc = EXCLUDED.app_token_enc, bot_token_enc = EXCLUDED.bot_token_enc,
				key_id = EXCLUDED.key_id, status = 'active', updated_at = now()
			RETURNING id, created_at, updated_at`,
			w.TenantID, w.TeamID, w.TeamName, w.EnterpriseID, w.AppID, w.BotUserID, w.BotID,
			appEnc, botEnc, keyID).Scan(&w.ID, &w.CreatedAt, &w.UpdatedAt)
	})
	switch pgCode(err) {
	case pgInsufficient:
		// The team's row belongs to another tenant (a race with the check
		// above): RLS refuses the update.
		return konstruct.Workspace{}, &konstruct.Error{Code: konstruct.ECONFLICT,
			Message: fmt.Sprintf("team %s is already registered to another tenant", w.TeamID), Err: err}
	case pgForeignKey:
		return konstruct.Workspace{}, &konstruct.Error{Code: konstruct.ENOTFOUND, Message: fmt.Sprintf("no tenant %q", w.TenantID), Err: err}
	}
	if err != nil {
		return konstruct.Workspace{}, wrap(err, "add workspace")
	}
	return w, nil
}

// RemoveWorkspace marks a workspace removed and erases its tokens; the row
// stays for the history of its replies. ENOTFOUND if the team is unknown.
func (s *Store) RemoveWorkspace(ctx context.Context, teamID string) error {
	return s.SetWorkspaceStatus(ctx, teamID, konstruct.WorkspaceRemoved)
}

// SetWorkspaceStatus changes a workspace's status (e.g. revoked when Slack
// refuses its token). Removed also erases the tokens; active again needs
// AddWorkspace with fresh tokens if they were erased.
func (s *Store) SetWorkspaceStatus(ctx context.Context, teamID string, st konstruct.WorkspaceStatus) error {
	switch st {
	case konstruct.WorkspaceActive, konstruct.WorkspaceRevoked, konstruct.WorkspaceRemoved:
	default:
		return konstruct.Errorf(konstruct.EINVALID, "unknown workspace status %q", st)
	}
	cur, err := s.TenantForTeam(ctx, teamID)
	if err != nil {
		return err
	}
	err = s.InTenant(ctx, cur.TenantID, func(tx pgx.Tx) error {
		q := `UPDATE workspaces SET status = $2, updated_at = now() WHERE team_id = $1`
		if st == konstruct.WorkspaceRemoved {
			q = `UPDATE workspaces SET status = $2, updated_at = now(),
			        app_token_enc = NULL, bot_token_enc = NULL, key_id = NULL
			     WHERE team_id = $1`
		}
		tag, err := tx.Exec(ctx, q, teamID, string(st))
		if err == nil && tag.RowsAffected() == 0 {
			err = pgx.ErrNoRows
		}
		return err
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return &konstruct.Error{Code: konstruct.ENOTFOUND, Message: fmt.Sprintf("no workspace with team id %q", teamID), Err: err}
	case pgCode(err) == pgCheckViolation:
		return &konstruct.Error{Code: konstruct.EINVALID,
			Message: fmt.Sprintf("workspace %s was removed and has no tokens: add it again with `konstruct workspace add`", teamID), Err: err}
	}
	return wrap(err, "set workspace status")
}

// TenantForTeam resolves an event's team to its workspace: TenantID, ID,
// TeamID, BotUserID, BotID and Status only. ENOTFOUND if unknown.
func (s *Store) TenantForTeam(ctx context.Context, teamID string) (konstruct.Workspace, error) {
	var w konstruct.Workspace
	err := s.pool.QueryRow(ctx,
		`SELECT tenant_id, id, team_id, bot_user_id, bot_id, status FROM konstruct_workspace_for_team($1)`,
		teamID).Scan(&w.TenantID, &w.ID, &w.TeamID, &w.BotUserID, &w.BotID, &w.Status)
	if errors.Is(err, pgx.ErrNoRows) {
		return konstruct.Workspace{}, &konstruct.Error{Code: konstruct.ENOTFOUND, Message: fmt.Sprintf("no workspace with team id %q", teamID), Err: err}
	}
	if err != nil {
		return konstruct.Workspace{}, wrap(err, "workspace for team")
	}
	return w, nil
}

// ListWorkspaces lists every tenant's workspaces, without tokens (admin CLI).
func (s *Store) ListWorkspaces(ctx context.Context) ([]konstruct.Workspace, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, tenant_id, team_id, team_name, enterprise_id, app_id, bot_user_id, bot_id,
		       status, created_at, updated_at
		FROM konstruct_workspaces()`)
	if err != nil {
		return nil, wrap(err, "list workspaces")
	}
	ws, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (konstruct.Workspace, error) {
		var w konstruct.Workspace
		err := row.Scan(&w.ID, &w.TenantID, &w.TeamID, &w.TeamName, &w.EnterpriseID, &w.AppID,
			&w.BotUserID, &w.BotID, &w.Status, &w.CreatedAt, &w.UpdatedAt)
		return w, err
	})
	return ws, wrap(err, "list workspaces")
}

// ActiveWorkspaces lists every tenant's active workspaces with decrypted
// tokens, for the gateway. A workspace whose tokens cannot be decrypted is
// listed without tokens, its Problem naming the team, the key id (never the
// token) and the fix: the others are served.
func (s *Store) ActiveWorkspaces(ctx context.Context) ([]konstruct.Workspace, error) {
	if err := s.needBox("reading workspace tokens"); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id, tenant_id, team_id, team_name, enterprise_id, app_id, bot_user_id, bot_id,
		       app_token_enc, bot_token_enc, key_id, status, created_at, updated_at
		FROM konstruct_active_workspaces()`)
	if err != nil {
		return nil, wrap(err, "active workspaces")
	}
	ws, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (konstruct.Workspace, error) {
		var (
			w              konstruct.Workspace
			appEnc, botEnc []byte
			keyID          string
		)
		if err := row.Scan(&w.ID, &w.TenantID, &w.TeamID, &w.TeamName, &w.EnterpriseID, &w.AppID,
			&w.BotUserID, &w.BotID, &appEnc, &botEnc, &keyID, &w.Status, &w.CreatedAt, &w.UpdatedAt); err != nil {
			return w, err
		}
		// A workspace whose tokens do not open is listed with its problem,
		// not an error: one bad row must not keep every other workspace
		// from connecting.
		app, err := s.box.Open(appEnc, keyID, tokenAAD(w.TenantID, w.TeamID, appTokenColumn))
		if err != nil {
			w.Problem = konstruct.ErrorMessage(s.openError(w.TeamID, keyID, err))
			return w, nil
		}
		bot, err := s.box.Open(botEnc, keyID, tokenAAD(w.TenantID, w.TeamID, botTokenColumn))
		if err != nil {
			w.Problem = konstruct.ErrorMessage(s.openError(w.TeamID, keyID, err))
			return w, nil
		}
		w.AppToken, w.BotToken = string(app), string(bot)
		return w, nil
	})
	if err != nil {
		return nil, wrap(err, "active workspaces")
	}
	return ws, nil
}

// UnboundTokens lists the active workspaces whose tokens were sealed
// before ciphertexts were bound to their row (a bare key id): they still
// open, and `konstruct workspace rekey` binds them (doctor points there).
func (s *Store) UnboundTokens(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT team_id, key_id FROM konstruct_active_workspaces()`)
	if err != nil {
		return nil, wrap(err, "unbound tokens")
	}
	var teams []string
	var team, ref string
	_, err = pgx.ForEachRow(rows, []any{&team, &ref}, func() error {
		if _, bound := secret.ParseKeyRef(ref); !bound {
			teams = append(teams, team)
		}
		return nil
	})
	return teams, wrap(err, "unbound tokens")
}

func (s *Store) openError(teamID, keyRef string, err error) error {
	keyID, _ := secret.ParseKeyRef(keyRef)
	msg := fmt.Sprintf("cannot decrypt the tokens of workspace %s", teamID)
	switch {
	case errors.Is(err, secret.ErrUnknownKey):
		msg += fmt.Sprintf(": they were sealed with key %s, which is neither secret_key (key %s) nor in secret_key_previous; add the key they were stored with to secret_key_previous",
			keyID, s.box.CurrentKeyID())
	case errors.Is(err, secret.ErrDecrypt):
		msg += fmt.Sprintf(": they do not authenticate under key %s for this workspace (altered in the database, or copied from another workspace's row?); add the workspace again", keyID)
	}
	return &konstruct.Error{Code: konstruct.EINVALID, Message: msg, Err: err}
}

// RekeyWorkspaces re-seals every workspace's tokens that are not under the
// current key (after a rotation: new secret_key, old one listed as previous)
// or not bound to their row (sealed before binding existed), and returns how
// many it re-sealed. Each tenant is re-keyed in its own transaction.
func (s *Store) RekeyWorkspaces(ctx context.Context) (int, error) {
	if err := s.needBox("re-keying workspaces"); err != nil {
		return 0, err
	}
	tenants, err := s.ListTenants(ctx)
	if err != nil {
		return 0, err
	}
	current := s.box.CurrentKeyRef()
	total := 0
	for _, t := range tenants {
		n := 0
		err := s.InTenant(ctx, t.ID, func(tx pgx.Tx) error {
			type sealed struct {
				id, tenant, team, keyID string
				app, bot                []byte
			}
			rows, err := tx.Query(ctx, `
				SELECT id, tenant_id, team_id, key_id, app_token_enc, bot_token_enc FROM workspaces
				WHERE key_id IS NOT NULL AND key_id <> $1 FOR UPDATE`, current)
			if err != nil {
				return err
			}
			old, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (sealed, error) {
				var w sealed
				err := row.Scan(&w.id, &w.tenant, &w.team, &w.keyID, &w.app, &w.bot)
				return w, err
			})
			if err != nil {
				return err
			}
			for _, w := range old {
				appAAD, botAAD := tokenAAD(w.tenant, w.team, appTokenColumn), tokenAAD(w.tenant, w.team, botTokenColumn)
				app, err := s.box.Open(w.app, w.keyID, appAAD)
				if err != nil {
					return s.openError(w.team, w.keyID, err)
				}
				bot, err := s.box.Open(w.bot, w.keyID, botAAD)
				if err != nil {
					return s.openError(w.team, w.keyID, err)
				}
				appEnc, keyID, err := s.box.Seal(app, appAAD)
				if err != nil {
					return err
				}
				botEnc, _, err := s.box.Seal(bot, botAAD)
				if err != nil {
					return err
				}
				if _, err := tx.Exec(ctx,
					`UPDATE workspaces SET app_token_enc = $2, bot_token_enc = $3, key_id = $4, updated_at = now() WHERE id = $1`,
					w.id, appEnc, botEnc, keyID); err != nil {
					return err
				}
			}
			n = len(old)
			return nil
		})
		if err != nil {
			return total, wrap(err, "rekey workspaces of tenant "+t.Slug)
		}
		total += n
	}
	if total > 0 {
		s.logger.Info("workspace tokens re-sealed", "count", total, "key_id", current)
	}
	return total, nil
}
