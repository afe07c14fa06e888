package router_test

import (
	"context"
	"testing"

	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/router"
)

func TestPurge(t *testing.T) {
	t.Parallel()
	r := testenv.NewRedis(t)
	ctx := context.Background()
	other := r.Prefix + "x" // a longer prefix is not ours to keep: it starts with ours
	keys := []string{r.Prefix + "t1:engaged:C1:1.1", r.Prefix + "t2:event:Ev1", "asynq:{" + r.Prefix + "replies}:pending", other}
	for _, k := range keys {
		if err := r.Client.Set(ctx, k, 1, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	keep := "kt-purge-test-keep:" + r.Prefix
	if err := r.Client.Set(ctx, keep, 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Client.Del(context.Background(), keep) })
	if err := r.Client.SAdd(ctx, "asynq:queues", r.Prefix+"replies").Err(); err != nil {
		t.Fatal(err)
	}

	if err := router.Purge(ctx, r.Client, r.Prefix); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if n, _ := r.Client.Exists(ctx, k).Result(); n != 0 {
			t.Errorf("%s survived the purge", k)
		}
	}
	if n, _ := r.Client.Exists(ctx, keep).Result(); n != 1 {
		t.Error("a key outside the prefix was deleted")
	}
	if ok, _ := r.Client.SIsMember(ctx, "asynq:queues", r.Prefix+"replies").Result(); ok {
		t.Error("the queue is still listed in asynq:queues")
	}
	if err := router.Purge(ctx, r.Client, ""); err == nil {
		t.Error("an empty prefix was accepted")
	}
}
