package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
)

// RecordReply stores the record of one answer (or failure). A retried task
// upserts the row keyed by (tenant, event id) instead of adding another.
// Without a WorkspaceID, the tenant's workspace of r.TeamID is used (the
// lookup runs under the tenant's RLS, so it can only find its own).
func (s *Store) RecordReply(ctx context.Context, r konstruct.Reply) error {
	if r.EventID == "" {
		return konstruct.Errorf(konstruct.EINVALID, "a reply needs the event id it answers")
	}
	var workspaceID any
	if r.WorkspaceID != "" {
		workspaceID = r.WorkspaceID
	}
	err := s.InTenant(ctx, r.TenantID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			INSERT INTO replies (tenant_id, workspace_id, team_id, channel_id, thread_ts, message_ts, event_id,
			                     model, provider, prompt_tokens, completion_tokens, ttft_ms, latency_ms, outcome, error,
			                     user_id, post_ts, answer_ms)
			VALUES ($1, COALESCE($2::uuid, (SELECT id FROM workspaces WHERE team_id = $3)), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
			        $16, $17, $18)
			ON CONFLICT (tenant_id, event_id) DO UPDATE SET
				workspace_id = EXCLUDED.workspace_id, team_id = EXCLUDED.team_id,
				channel_id = EXCLUDED.channel_id, thread_ts = EXCLUDED.thread_ts,
				message_ts = EXCLUDED.message_ts, model = EXCLUDED.model, provider = EXCLUDED.provider,
				prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
				ttft_ms = EXCLUDED.ttft_ms, latency_ms = EXCLUDED.latency_ms,
				outcome = EXCLUDED.outcome, error = EXCLUDED.error,
				user_id = EXCLUDED.user_id, post_ts = EXCLUDED.post_ts, answer_ms = EXCLUDED.answer_ms`,
			r.TenantID, workspaceID, r.TeamID, r.ChannelID, r.ThreadTS, r.MessageTS, r.EventID,
			r.Model, r.Provider, r.PromptTokens, r.CompletionTokens,
			ceilMS(r.TimeToFirstToken), ceilMS(r.Latency),
			r.Outcome, konstruct.Redact(r.Error), r.UserID, r.PostTS, ceilMS(r.AnswerTime))
		return err
	})
	return wrap(err, "record reply")
}

// Replies returns the tenant's latest replies, newest first (limit ≤ 0
// means 50).
func (s *Store) Replies(ctx context.Context, tenantID string, limit int) ([]konstruct.Reply, error) {
	if limit <= 0 {
		limit = 50
	}
	var out []konstruct.Reply
	err := s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT id, tenant_id, COALESCE(workspace_id::text, ''), team_id, channel_id, thread_ts, message_ts,
			       event_id, model, provider, prompt_tokens, completion_tokens, ttft_ms, latency_ms,
			       outcome, error, user_id, post_ts, answer_ms, created_at
			FROM replies ORDER BY created_at DESC, id LIMIT $1`, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (konstruct.Reply, error) {
			var (
				r                     konstruct.Reply
				ttft, latency, answer int64
			)
			err := row.Scan(&r.ID, &r.TenantID, &r.WorkspaceID, &r.TeamID, &r.ChannelID, &r.ThreadTS, &r.MessageTS,
				&r.EventID, &r.Model, &r.Provider, &r.PromptTokens, &r.CompletionTokens, &ttft, &latency,
				&r.Outcome, &r.Error, &r.UserID, &r.PostTS, &answer, &r.CreatedAt)
			r.TimeToFirstToken = time.Duration(ttft) * time.Millisecond
			r.Latency = time.Duration(latency) * time.Millisecond
			r.AnswerTime = time.Duration(answer) * time.Millisecond
			return r, err
		})
		return err
	})
	if err != nil {
		return nil, wrap(err, "replies")
	}
	return out, nil
}

// ceilMS rounds a duration up to whole milliseconds, so a sub-millisecond
// time to first token is stored as 1 ms, not as "none".
func ceilMS(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
