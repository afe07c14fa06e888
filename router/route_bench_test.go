package router_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/router"
)

// benchSlack, benchEnqueuer and benchTenants answer at once: the benchmark
// measures the router's own work plus its Redis round trips.
type benchSlack struct{ n atomic.Int64 }

func (s *benchSlack) Post(context.Context, string, string, string, konstruct.Content) (string, error) {
	return fmt.Sprintf("1712345678.%06d", s.n.Add(1)), nil
}
func (s *benchSlack) Replies(context.Context, string, string, string) ([]konstruct.ThreadMessage, error) {
	return nil, nil
}
func (s *benchSlack) PostEphemeral(context.Context, string, string, string, string, string) error {
	return nil
}
func (s *benchSlack) Delete(context.Context, string, string, string) error { return nil }

type benchEnqueuer struct{ n atomic.Int64 }

func (e *benchEnqueuer) EstimateWait(context.Context, string) (time.Duration, error) { return 0, nil }

func (e *benchEnqueuer) Enqueue(context.Context, konstruct.ReplyJob) error {
	e.n.Add(1)
	return nil
}

type benchTenants struct{}

func (benchTenants) TenantForTeam(_ context.Context, team string) (konstruct.Workspace, error) {
	return konstruct.Workspace{TenantID: "tenant-" + team, TeamID: team, BotUserID: "UBOT", Status: konstruct.WorkspaceActive}, nil
}

// BenchmarkRouteLoad routes normalized messages: channel chatter (dropped before
// any I/O but the cached tenant lookup) and mentions (dedupe claim and rate
// limit in Redis, placeholder, enqueue — the last two faked).
func BenchmarkRouteLoad(b *testing.B) {
	rd := testenv.NewRedis(b)
	q := rd.NewQueue(b, queue.Config{RatePerMinute: 1 << 30})
	r := router.New(router.Config{}, router.Deps{
		Intake:   q,
		Replies:  q,
		Tenants:  benchTenants{},
		Slack:    &benchSlack{},
		Claims:   q,
		Threads:  q,
		Limiter:  q,
		Enqueuer: &benchEnqueuer{},
		Budgets:  q,
		Policies: &fakePolicies{},
		Usage:    q,
		Notes:    q,
		Records:  &fakeRecords{},
		Feedback: &fakeRecords{},
		Stops:    q,
	})
	var seq atomic.Int64
	message := func(mention bool) konstruct.Message {
		n := seq.Add(1)
		ts := fmt.Sprintf("1712345678.%06d", n)
		m := konstruct.Message{TeamID: fmt.Sprintf("T%03d", n%50), EventID: fmt.Sprintf("Ev%d", n), EventType: "message", ChannelID: "C1",
			ChannelType: konstruct.ChannelPublic, User: "UHUMAN", Text: "hello there", TS: ts, ReceivedAt: time.Now()}
		if mention {
			m.EventType, m.IsMention, m.ChannelType = "app_mention", true, ""
		}
		return m
	}
	for _, bc := range []struct {
		name    string
		mention bool
		want    router.Outcome
	}{
		{"chatter", false, router.NotAddressed},
		{"mention", true, router.Enqueued},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if out, err := r.Route(ctx, konstruct.Record{ID: "1-0", Message: message(bc.mention)}); err != nil || out != bc.want {
					b.Fatalf("Route = %s, %v; want %s", out, err, bc.want)
				}
			}
		})
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if out, err := r.Route(ctx, konstruct.Record{ID: "1-0", Message: message(bc.mention)}); err != nil || out != bc.want {
						b.Errorf("Route = %s, %v; want %s", out, err, bc.want)
						return
					}
				}
			})
		})
	}
}
