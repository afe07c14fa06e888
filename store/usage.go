package store

import (
	"context"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/konstruct/konstruct"
)

// Usage groupings (konstruct usage --by).
const (
	UsageByDay     = "day"     // the UTC day the question was recorded
	UsageByChannel = "channel" // the Slack channel id
	UsageByUser    = "user"    // the Slack user id of who asked
)

// UsageFigures is how a tenant's AI employee did over a window, every
// figure about the questions of the window: how many there were (refused
// ones too), how many got an answer (stopped ones too) or an error, the
// tokens spent on them, the time to the first token (the LLM's) and to the
// final answer (from the question's arrival) of the answered ones, and the
// 👍/👎 their answers got (whenever the vote was cast).
type UsageFigures struct {
	Questions, Answers, Errors int64
	TokensIn, TokensOut        int64
	// Percentiles in milliseconds; nil when no answer had a timing.
	TTFTP50, TTFTP95, AnswerP50, AnswerP95 *int64
	FeedbackUp, FeedbackDown               int64
}

// UsageRow is the figures of one day, channel or user.
type UsageRow struct {
	Key string
	UsageFigures
}

// UsageReport is the figures of a window, in total and by a grouping.
type UsageReport struct {
	Since, Until time.Time
	By           string // "", UsageByDay, UsageByChannel or UsageByUser
	Total        UsageFigures
	Rows         []UsageRow // ordered by key; only the keys with questions
}

// Usage reports the tenant's questions recorded in [since, until), in
// total and, with by set, per day, channel or user, read under the
// tenant's Row-Level Security.
func (s *Store) Usage(ctx context.Context, tenantID string, since, until time.Time, by string) (UsageReport, error) {
	rep := UsageReport{Since: since, Until: until, By: by}
	key := `''`
	switch by {
	case "":
	case UsageByDay:
		key = `to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`
	case UsageByChannel:
		key = `channel_id`
	case UsageByUser:
		key = `user_id`
	default:
		return rep, konstruct.Errorf(konstruct.EINVALID, "usage by %q: use day, channel or user", by)
	}
	// One scan of the window's replies; GROUPING SETS gives the rows and
	// the total together. Feedback is counted per answer first, so that
	// an answer's votes never multiply its reply row.
	q := `
		WITH r AS (
			SELECT ` + key + ` AS k, outcome, prompt_tokens, completion_tokens, ttft_ms, answer_ms,
			       team_id, channel_id, post_ts
			FROM replies WHERE created_at >= $1 AND created_at < $2
		), f AS (
			SELECT team_id, channel_id, post_ts,
			       count(*) FILTER (WHERE vote = 'up') AS up, count(*) FILTER (WHERE vote = 'down') AS down
			FROM feedback
			WHERE (team_id, channel_id, post_ts) IN (SELECT team_id, channel_id, post_ts FROM r WHERE post_ts <> '')
			GROUP BY team_id, channel_id, post_ts
		)
		SELECT GROUPING(r.k) = 1, COALESCE(r.k, ''),
		       count(*),
		       count(*) FILTER (WHERE r.outcome IN ('answered', 'stopped')),
		       count(*) FILTER (WHERE r.outcome IN ('error', 'orphaned')),
		       COALESCE(sum(r.prompt_tokens), 0), COALESCE(sum(r.completion_tokens), 0),
		       percentile_cont(0.5) WITHIN GROUP (ORDER BY r.ttft_ms) FILTER (WHERE r.outcome IN ('answered', 'stopped') AND r.ttft_ms > 0),
		       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.ttft_ms) FILTER (WHERE r.outcome IN ('answered', 'stopped') AND r.ttft_ms > 0),
		       percentile_cont(0.5) WITHIN GROUP (ORDER BY r.answer_ms) FILTER (WHERE r.outcome IN ('answered', 'stopped') AND r.answer_ms > 0),
		       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.answer_ms) FILTER (WHERE r.outcome IN ('answered', 'stopped') AND r.answer_ms > 0),
		       COALESCE(sum(f.up), 0), COALESCE(sum(f.down), 0)
		FROM r LEFT JOIN f ON r.post_ts <> '' AND f.team_id = r.team_id AND f.channel_id = r.channel_id AND f.post_ts = r.post_ts
		GROUP BY GROUPING SETS ((r.k), ())
		ORDER BY 1, 2`
	err := s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, since, until)
		if err != nil {
			return err
		}
		var (
			total                  bool
			row                    UsageRow
			tp50, tp95, ap50, ap95 *float64
		)
		_, err = pgx.ForEachRow(rows, []any{&total, &row.Key, &row.Questions, &row.Answers, &row.Errors, &row.TokensIn, &row.TokensOut,
			&tp50, &tp95, &ap50, &ap95, &row.FeedbackUp, &row.FeedbackDown}, func() error {
			row.TTFTP50, row.TTFTP95, row.AnswerP50, row.AnswerP95 = roundMS(tp50), roundMS(tp95), roundMS(ap50), roundMS(ap95)
			if total {
				rep.Total = row.UsageFigures
			} else if by != "" {
				rep.Rows = append(rep.Rows, row)
			}
			return nil
		})
		return err
	})
	if err != nil {
		return UsageReport{}, wrap(err, "usage")
	}
	return rep, nil
}

func roundMS(v *float64) *int64 {
	if v == nil {
		return nil
	}
	n := int64(math.Round(*v))
	return &n
}
