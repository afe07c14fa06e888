package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
)

// RecordVote records a person's 👍 or 👎 on the answer to a post: one vote
// per person per answer, replaced by a vote the other way. changed is false
// when the same vote was recorded already (a second click, or the record
// routed again). The vote is written under the post's tenant (RLS): a vote
// can only ever land in the tenant the caller resolved.
func (s *Store) RecordVote(ctx context.Context, v konstruct.Vote) (changed bool, err error) {
	p := v.Post
	if !p.Valid() || v.User == "" {
		return false, konstruct.Errorf(konstruct.EINVALID, "a vote needs its post and its voter")
	}
	vote := "down"
	if v.Up {
		vote = "up"
	}
	at := v.At
	if at.IsZero() {
		at = time.Now()
	}
	// Clicks are routed concurrently: of two by one person, the later
	// click holds whatever order they are recorded in.
	err = s.InTenant(ctx, p.TenantID, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			INSERT INTO feedback (tenant_id, team_id, channel_id, post_ts, user_id, vote, clicked_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (tenant_id, team_id, channel_id, post_ts, user_id) DO UPDATE
				SET vote = EXCLUDED.vote, clicked_at = EXCLUDED.clicked_at, updated_at = now()
				WHERE feedback.clicked_at < EXCLUDED.clicked_at AND feedback.vote <> EXCLUDED.vote`,
			p.TenantID, p.TeamID, p.ChannelID, p.TS, v.User, vote, at)
		changed = tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, wrap(err, "record vote")
	}
	return changed, nil
}

// Votes returns the votes on the answer to a post, voter → up.
func (s *Store) Votes(ctx context.Context, post konstruct.Post) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.InTenant(ctx, post.TenantID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT user_id, vote = 'up' FROM feedback WHERE team_id = $1 AND channel_id = $2 AND post_ts = $3`,
			post.TeamID, post.ChannelID, post.TS)
		if err != nil {
			return err
		}
		var user string
		var up bool
		_, err = pgx.ForEachRow(rows, []any{&user, &up}, func() error {
			out[user] = up
			return nil
		})
		return err
	})
	if err != nil {
		return nil, wrap(err, "votes")
	}
	return out, nil
}
