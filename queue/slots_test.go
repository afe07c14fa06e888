package queue

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// The key layout's hash slots (keys.go): every multi-key step keeps its
// keys in one Redis Cluster slot. TestKeySlots checks each script's keys
// as the code builds them; slotCheck, on every client the queue's tests
// open, refuses a script call whose KEYS span slots and any MULTI, so a
// new script or step that breaks the rule fails the tests that run it —
// on a single Redis, where nothing else would notice.

func init() { testHooks = append(testHooks, slotCheck{}) }

// keySlot is Redis Cluster's slot of a key: CRC16 (XMODEM) of its hash tag
// — what the first {…} with something inside holds — or of the whole key,
// modulo 16384.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

func TestKeySlotIsRedisCluster(t *testing.T) {
	t.Parallel()
	// Values from the Redis Cluster specification and CLUSTER KEYSLOT.
	for key, want := range map[string]int{
		"123456789": 0x31C3 % 16384, "foo": 12182, "{user1000}.following": keySlot("user1000"),
		"foo{}{bar}": keySlot("foo{}{bar}"), "foo{{bar}}zap": keySlot("{bar"), "foo{bar}{zap}": keySlot("bar"),
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
}

// sameSlot returns an error naming the keys when they span slots.
func sameSlot(what string, ks ...string) error {
	for _, k := range ks[1:] {
		if keySlot(k) != keySlot(ks[0]) {
			return fmt.Errorf("keys.go: the keys of %s must share a hash slot (Redis Cluster), got %q (slot %d) and %q (slot %d)",
				what, ks[0], keySlot(ks[0]), k, keySlot(k))
		}
	}
	return nil
}

// TestKeySlots: the keys of every script, built as the code builds them,
// are in one slot — for several prefixes, tenants, teams and providers.
func TestKeySlots(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"", "acme:", "kt:0a1b2c:"} {
		k := keys{prefix: prefix}
		for _, tenant := range []string{"0b5c6a2e-7d1f-4c3a-9e8b-2f4d6a8c0e1f", "t1"} {
			post := konstruct.Post{TenantID: tenant, TeamID: "T0123", ChannelID: "C0456", TS: "1700000000.000100"}
			other := konstruct.Post{TenantID: "t2", TeamID: "T9", ChannelID: "C9", TS: "1.2"}
			for what, ks := range map[string][]string{
				"claimScript (post, event)":        {k.post(post), k.event(tenant, "Ev1")},
				"a reply's hash and lock":          {k.reply(post), k.replyLock(post)},
				"a tenant's keys":                  {k.post(post), k.engaged(tenant, "C1", "1.1"), k.rateLimit(tenant, "C1"), k.rateLimitUser(tenant, "C1", "U1"), k.rateNote(tenant, "C1", "U1"), k.reply(post), k.note(tenant, "dm", "T1", "U1", time.Unix(0, 0)), k.stop(post)},
				"addTokensScript (day, month)":     {k.tokensDay(tenant, time.Unix(1e9, 0)), k.tokensMonth(tenant, time.Unix(1e9, 0))},
				"enqueueScript":                    {k.task(post), k.fairWait(tenant), k.fairRing(), k.fairJobs(), k.fairKick()},
				"admitScript (and its wait lists)": {k.fairRing(), k.fairAdmitted(), k.fairRun(), k.fairJobs(), k.fairWorkers(), k.fairWait(tenant), k.fairWait("t2"), k.fairWaitPrefix() + "x"},
				"finishScript":                     {k.fairAdmitted(), k.fairRun(), k.fairJobs()},
				"unadmitScript":                    {k.fairAdmitted(), k.fairRun(), k.fairWait(tenant), k.fairRing()},
				"estimateScript":                   {k.fairRing(), k.fairRun(), k.fairWorkers(), k.fairAvg(), k.fairWait(tenant)},
				"two posts' task keys":             {k.task(post), k.task(other)},
				"slotScript":                       {k.llmHeld("vllm-a"), k.llmWait("vllm-a")},
				"budgetScript (per workspace)":     {k.slackBudget("chat.update", "T0123", ""), k.slackPause("chat.update", "T0123")},
				"budgetScript (per channel)":       {k.slackBudget("chat.postMessage", "T0123", "C0456"), k.slackPause("chat.postMessage", "T0123")},
				"the gateways' leases":             {k.gatewaysLive(), k.gatewayApp("a1b2c3"), k.gatewayApp("ffff")},
			} {
				if err := sameSlot(what, ks...); err != nil {
					t.Error(err)
				}
				for _, key := range ks {
					if !strings.HasPrefix(key, prefix) {
						t.Errorf("%s: key %q does not start with the prefix %q", what, key, prefix)
					}
				}
			}
		}
	}
	// Tenants, workspaces and providers spread over slots: a tag per
	// tenant, not one for all.
	k := keys{prefix: "p:"}
	if keySlot(k.reply(konstruct.Post{TenantID: "a", TeamID: "T", ChannelID: "C", TS: "1"})) ==
		keySlot(k.reply(konstruct.Post{TenantID: "b", TeamID: "T", ChannelID: "C", TS: "1"})) {
		t.Error("two tenants' replies share a slot: the tenant is not the hash tag")
	}
}

// slotCheck refuses, on the tests' clients, a script whose KEYS span
// slots and any MULTI transaction (keys.go: atomic steps are scripts).
type slotCheck struct{}

func (slotCheck) DialHook(next redis.DialHook) redis.DialHook { return next }

func (slotCheck) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := checkCmdSlots(cmd); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (slotCheck) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			err := checkCmdSlots(c)
			if err == nil && c.Name() == "multi" {
				err = fmt.Errorf("keys.go: atomic steps are Lua scripts, not MULTI (a transaction cannot carry redis.wait_replicas' WAIT)")
			}
			if err != nil {
				for _, c := range cmds {
					c.SetErr(err)
				}
				return err
			}
		}
		return next(ctx, cmds)
	}
}

func checkCmdSlots(cmd redis.Cmder) error {
	switch cmd.Name() {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
	default:
		return nil
	}
	args := cmd.Args()
	if len(args) < 3 {
		return nil
	}
	n, err := strconv.Atoi(fmt.Sprint(args[2]))
	if err != nil || n < 2 || len(args) < 3+n {
		return nil
	}
	ks := make([]string, n)
	for i := range n {
		ks[i] = fmt.Sprint(args[3+i])
	}
	return sameSlot("a script", ks...)
}
