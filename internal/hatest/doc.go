// Package hatest is `make test-ha`: Konstruct as an install that outgrew
// one machine runs it — several processes of the real binary (`konstruct
// run`, `gateway`, `worker`) sharing one Postgres database and Redis behind
// Sentinel (a master, two replicas, three sentinels, all the test's own),
// Slack played by slacksim and the model by llmfake in the test process —
// under a steady load of mentions and channel chatter, while one process is
// SIGKILLed and, later, the Redis master is killed and the sentinels fail
// it over. Then every thread is read as a person would: each mention
// answered exactly once, no placeholder left, no chatter answered, every
// envelope acked, no app past Slack's 10 sockets.
//
// It takes minutes and is not part of `make test`: it runs only with
// KONSTRUCT_TEST_HA=1 (the Makefile sets it). Knobs (environment):
// KONSTRUCT_HA_WORKSPACES (12), KONSTRUCT_HA_RATE posts/s (30),
// KONSTRUCT_HA_EVERY (3: every third post a mention, the rest chatter),
// KONSTRUCT_HA_LOAD (60s), KONSTRUCT_HA_LLM first-token delay (200ms),
// KONSTRUCT_HA_ROLES (run,gateway,worker: the first is the one killed),
// KONSTRUCT_HA_FAULTS=off (no kill, no failover: a baseline or a sizing
// run), KONSTRUCT_HA_REPORT (a file for the JSON report),
// KONSTRUCT_TEST_BINARY (a built konstruct; else it is built).
package hatest
