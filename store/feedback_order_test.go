package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
)

// Clicks are routed concurrently: a person's 👍 then 👎, recorded in the
// other order, leaves the 👎.
func TestLaterClickHoldsWhateverTheOrder(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx := context.Background()
	ten, err := st.CreateTenant(ctx, "Clicks", "clicks")
	if err != nil {
		t.Fatal(err)
	}
	post := konstruct.Post{TenantID: ten.ID, TeamID: "T1", ChannelID: "C1", TS: "1.1"}
	first := time.Now()
	for _, v := range []konstruct.Vote{
		{Post: post, User: "U1", Up: false, At: first.Add(time.Millisecond)}, // the later click, recorded first
		{Post: post, User: "U1", Up: true, At: first},
	} {
		if _, err := st.RecordVote(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	if votes, err := st.Votes(ctx, post); err != nil || len(votes) != 1 || votes["U1"] {
		t.Errorf("votes %v, %v: want U1's later 👎", votes, err)
	}
}
