// Package queue is Konstruct's one home for Redis: the key layout
// (keys.go), the router's dedupe claims, engaged threads and rate limits,
// the reply tasks on an asynq queue and the server that runs them, the
// durable record of each reply with its lease, and purging an install's
// keys. It is the only product package that imports go-redis, redis_rate
// or asynq; the router and the workers declare the small interfaces they
// need and cmd/konstruct hands them a *Queue.
//
// Place in the flow: router → Claim, Engaged, Allow, Enqueue → (asynq) →
// Serve → worker handler → Acquire/Load/Save/Finish of the reply's state,
// Engage the thread; the janitor reads Due.
package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/konstruct/konstruct"
)

// Config configures a Queue. Zero values take the defaults noted.
type Config struct {
	// URL is redis.url (redis://, rediss:// or unix://). With Sentinel or
	// Cluster its host is not used: its user, password, database number
	// and TLS (rediss://) are those of the data nodes.
	URL string
	// SentinelMaster and SentinelAddrs (redis.sentinel.master, .addrs)
	// put Redis behind Sentinel: the master is asked of the sentinels, and
	// asked again after a failover. SentinelPassword (redis.sentinel.password)
	// is the sentinels' own, when they require one.
	SentinelMaster   string
	SentinelAddrs    []string
	SentinelPassword string
	// ClusterAddrs (redis.cluster.addrs) are seed nodes of a Redis Cluster.
	ClusterAddrs []string
	// WaitReplicas (redis.wait_replicas) is how many replicas must confirm
	// each write (Redis WAIT, on the connection that wrote) before it
	// counts; a write fewer confirm within WaitTimeout fails, and its
	// caller tries again. Replication is asynchronous: without it a
	// failover may lose the last writes the old master took. Negative: the
	// default, 1 with Sentinel, else 0. Not with Cluster.
	WaitReplicas int
	// WaitTimeout bounds a WAIT (default 1 s).
	WaitTimeout time.Duration
	// Prefix is redis.prefix: the start of every key and of the queue name.
	Prefix string
	// PoolSize is the connection pool (default 128: the router runs many
	// goroutines that each make a few round trips).
	PoolSize int
	// DedupeTTL is how long a claimed event and post are remembered (24 h).
	DedupeTTL time.Duration
	// EngagedTTL is the auto-follow window of a thread (threads.engaged_ttl, 30 m).
	EngagedTTL time.Duration
	// RatePerMinute is the rate limit per tenant per channel
	// (ratelimit.per_minute, 30).
	RatePerMinute int
	// RatePerUserPerMinute is the rate limit per person per channel
	// (ratelimit.per_user_per_minute, 10).
	RatePerUserPerMinute int
	// ReplyTTL is how long a reply's state is kept (48 h).
	ReplyTTL time.Duration
	// OrphanAfter is how long a reply may go without a heartbeat before
	// the janitor may take it over (default 1 m).
	OrphanAfter time.Duration
	// TaskCheckInterval is how often an idle Serve polls the queue (default
	// 10 ms): asynq's own default (1 s, jittered to 0.5–1.5 s) would add up
	// to 1.5 s before a person sees the answer start.
	TaskCheckInterval time.Duration
	// ShutdownTimeout is how long Serve lets running tasks finish after its
	// context ended before they go back to the queue (default 20 s).
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	// SlackTiers are the budgets of Slack's methods (slack.rate_limits):
	// nil takes DefaultSlackTiers; a method it names replaces the default.
	SlackTiers map[string]SlackTier
	// Now is the clock of the janitor's deadlines (default time.Now; tests
	// move it instead of sleeping).
	Now func() time.Time
}

// Defaults of the settings an operator may change.
const (
	DefaultRatePerMinute        = 30
	DefaultRatePerUserPerMinute = 10
	DefaultEngagedTTL           = 30 * time.Minute
)

// Validate reports every problem with c, as *konstruct.FieldError values.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &konstruct.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	switch {
	case len(c.ClusterAddrs) > 0 && (c.SentinelMaster != "" || len(c.SentinelAddrs) > 0):
		bad("cluster_addrs", "and redis.sentinel.* are both set: Redis is either behind Sentinel or a Cluster")
	case c.SentinelMaster != "" && len(c.SentinelAddrs) == 0:
		bad("sentinel_addrs", "is required with redis.sentinel.master: the sentinels' host:port, comma-separated")
	case c.SentinelMaster == "" && len(c.SentinelAddrs) > 0:
		bad("sentinel_master", "is required with redis.sentinel.addrs: the name of the master the sentinels monitor (e.g. mymaster)")
	}
	for _, a := range c.SentinelAddrs {
		if !isHostPort(a) {
			bad("sentinel_addrs", "must be host:port entries, comma-separated, got %q", a)
		}
	}
	for _, a := range c.ClusterAddrs {
		if !isHostPort(a) {
			bad("cluster_addrs", "must be host:port entries, comma-separated, got %q", a)
		}
	}
	if len(c.ClusterAddrs) > 0 && c.WaitReplicas > 0 {
		bad("wait_replicas", "is not supported with redis.cluster.addrs (set it to 0)")
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		bad("prefix", "must not hold { or }: braces are Redis Cluster hash tags, which the key layout sets itself")
	}
	if c.URL == "" {
		bad("url", "is required")
	} else if u, err := url.Parse(c.URL); err != nil {
		bad("url", "is not a valid URL")
	} else if u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix" {
		bad("url", "must be a redis:// URL, got %q", u.Redacted())
	} else if opt, err := redis.ParseURL(c.URL); err != nil {
		bad("url", "is not a Redis URL (%s)", redactErr(err, u))
	} else if len(c.ClusterAddrs) > 0 && opt.DB != 0 {
		bad("url", "names database %d: a Redis Cluster has only database 0 (with redis.cluster.addrs, redis.url gives the user, password and TLS only)", opt.DB)
	}
	if c.RatePerMinute < 0 {
		bad("rate_per_minute", "must be at least 1, got %d", c.RatePerMinute)
	}
	if c.RatePerUserPerMinute < 0 {
		bad("rate_per_user_per_minute", "must be at least 1, got %d", c.RatePerUserPerMinute)
	}
	if c.EngagedTTL < 0 {
		bad("engaged_ttl", "must be a positive duration such as 30m")
	}
	if c.PoolSize < 0 {
		bad("pool_size", "must not be negative")
	}
	for m, t := range c.SlackTiers {
		if t.PerMinute <= 0 || t.Burst < 1 {
			bad("slack_tiers", "%s: per_minute must be positive and burst at least 1", m)
		}
	}
	return errors.Join(errs...)
}

// isHostPort reports whether s is host:port with a numeric port.
func isHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 16)
	return err == nil
}

// redactErr is err's text without the URL's password, should it echo it.
func redactErr(err error, u *url.URL) string {
	msg := err.Error()
	if p, ok := u.User.Password(); ok && p != "" {
		msg = strings.ReplaceAll(msg, p, "xxxxx")
	}
	return msg
}

func (c Config) withDefaults() Config {
	c.PoolSize = cmp.Or(c.PoolSize, 128)
	c.DedupeTTL = cmp.Or(c.DedupeTTL, 24*time.Hour)
	c.EngagedTTL = cmp.Or(c.EngagedTTL, DefaultEngagedTTL)
	c.RatePerMinute = cmp.Or(c.RatePerMinute, DefaultRatePerMinute)
	c.RatePerUserPerMinute = cmp.Or(c.RatePerUserPerMinute, DefaultRatePerUserPerMinute)
	c.ReplyTTL = cmp.Or(c.ReplyTTL, 48*time.Hour)
	c.OrphanAfter = cmp.Or(c.OrphanAfter, time.Minute)
	c.TaskCheckInterval = cmp.Or(c.TaskCheckInterval, 10*time.Millisecond)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, 20*time.Second)
	c.WaitTimeout = cmp.Or(c.WaitTimeout, time.Second)
	if c.WaitReplicas < 0 {
		c.WaitReplicas = 0
		if c.SentinelMaster != "" {
			c.WaitReplicas = 1
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Queue is an install's Redis: every method is safe for concurrent use.
type Queue struct {
	cfg  Config
	keys keys
	rdb  redis.UniversalClient
	log  *slog.Logger

	client  *asynq.Client
	insp    *asynq.Inspector
	limiter *limiter
	tiers   map[string]SlackTier
}

// Open connects (lazily: the first command dials) to the Redis of cfg:
// one server (URL), a master behind Sentinel (SentinelMaster), or a
// Cluster (ClusterAddrs). asynq runs on the same client.
func Open(cfg Config) (*Queue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	opt.PoolSize = max(opt.PoolSize, cfg.PoolSize)
	var rdb redis.UniversalClient
	switch {
	case len(cfg.ClusterAddrs) > 0:
		rdb = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: cfg.ClusterAddrs, Username: opt.Username, Password: opt.Password, TLSConfig: opt.TLSConfig,
			PoolSize: opt.PoolSize, DialTimeout: opt.DialTimeout, ReadTimeout: opt.ReadTimeout, WriteTimeout: opt.WriteTimeout,
		})
	case cfg.SentinelMaster != "":
		rdb = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: cfg.SentinelMaster, SentinelAddrs: cfg.SentinelAddrs, SentinelPassword: cfg.SentinelPassword,
			Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig,
			PoolSize: opt.PoolSize, DialTimeout: opt.DialTimeout, ReadTimeout: opt.ReadTimeout, WriteTimeout: opt.WriteTimeout,
		})
	default:
		rdb = redis.NewClient(opt)
	}
	if cfg.WaitReplicas > 0 {
		rdb.AddHook(&replicaWait{rdb: rdb, n: cfg.WaitReplicas, timeout: cfg.WaitTimeout})
	}
	for _, h := range testHooks {
		rdb.AddHook(h)
	}
	return newQueue(cfg, rdb), nil
}

// testHooks are added to every client Open makes (the queue's tests add a
// check of the key layout's hash slots, export_test.go).
var testHooks []redis.Hook

func newQueue(cfg Config, rdb redis.UniversalClient) *Queue {
	q := &Queue{
		cfg:    cfg,
		keys:   keys{prefix: cfg.Prefix},
		rdb:    rdb,
		log:    cfg.Logger.With(slog.String("component", "queue")),
		client: asynq.NewClientFromRedisClient(rdb),
		insp:   asynq.NewInspectorFromRedisClient(rdb),
	}
	q.limiter = newLimiter(rdb, cfg.RatePerMinute, cfg.RatePerUserPerMinute)
	q.tiers = maps.Clone(DefaultSlackTiers)
	maps.Copy(q.tiers, cfg.SlackTiers)
	return q
}

// Close releases the connections.
func (q *Queue) Close() error {
	return errors.Join(q.client.Close(), q.insp.Close(), q.rdb.Close())
}

// Ping checks that Redis answers.
func (q *Queue) Ping(ctx context.Context) error {
	if err := q.rdb.Ping(ctx).Err(); err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// QueueName is the asynq queue of reply tasks (redis.prefix + "replies").
func (q *Queue) QueueName() string { return q.keys.queue() }

// unavailable wraps a Redis error as EUNAVAILABLE (context errors stay
// what they are, so a cancelled caller is not told Redis is down).
func unavailable(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "Redis is unavailable.", Err: fmt.Errorf("%s: %w", what, err)}
}

// Durability is what Redis says about keeping what it is given.
type Durability struct {
	AOF            bool   // appendonly yes
	RDB            bool   // save points configured
	EvictionPolicy string // maxmemory-policy
	// Sentinel is set behind Sentinel; Replicas then counts the master's
	// replicas online, and WaitReplicas is redis.wait_replicas in effect.
	Sentinel     bool
	Replicas     int
	WaitReplicas int
}

// Problems lists what would let Redis lose queued work, each with its fix:
// no persistence at all (a restart of Redis loses every queued reply) or an
// eviction policy that may drop keys under memory pressure.
func (d Durability) Problems() []string {
	var out []string
	if !d.AOF && !d.RDB {
		out = append(out, "Redis keeps nothing on disk (appendonly no, no save points): a Redis restart loses queued replies; set `appendonly yes` (and `appendfsync everysec`) in redis.conf")
	}
	if d.EvictionPolicy != "" && d.EvictionPolicy != "noeviction" {
		out = append(out, "maxmemory-policy is "+d.EvictionPolicy+": queued replies could be evicted; set `maxmemory-policy noeviction` in redis.conf")
	}
	switch {
	case d.Sentinel && d.Replicas < d.WaitReplicas:
		out = append(out, fmt.Sprintf("redis.wait_replicas is %d but the master has %d replica(s) online: every write fails until one confirms it; "+
			"start the replicas (or lower redis.wait_replicas, and accept that a failover may lose the last writes)", d.WaitReplicas, d.Replicas))
	case d.Sentinel && d.WaitReplicas > 0 && d.Replicas < d.WaitReplicas+1:
		out = append(out, fmt.Sprintf("the master has %d replica(s) online for redis.wait_replicas %d: after a crash failover writes wait until the old master is back as a replica; "+
			"run one replica more than redis.wait_replicas (README, Scale out)", d.Replicas, d.WaitReplicas))
	}
	return out
}

// Topology names the Redis the queue uses: redis.url's, a master behind
// Sentinel, or a Cluster (for doctor and logs; no password).
func (q *Queue) Topology() string {
	switch {
	case len(q.cfg.ClusterAddrs) > 0:
		return "Redis Cluster (redis.cluster.addrs " + strings.Join(q.cfg.ClusterAddrs, ",") + ")"
	case q.cfg.SentinelMaster != "":
		return fmt.Sprintf("Redis behind Sentinel (master %q, redis.sentinel.addrs %s, redis.wait_replicas %d)",
			q.cfg.SentinelMaster, strings.Join(q.cfg.SentinelAddrs, ","), q.cfg.WaitReplicas)
	}
	return "Redis at redis.url"
}

// Durability asks Redis how it persists and evicts (CONFIG GET). A Redis
// that refuses CONFIG (managed services often do) gives an error.
func (q *Queue) Durability(ctx context.Context) (Durability, error) {
	v, err := q.rdb.ConfigGet(ctx, "*").Result()
	if err != nil {
		return Durability{}, unavailable("redis config", err)
	}
	d := Durability{
		AOF:            v["appendonly"] == "yes",
		RDB:            strings.TrimSpace(v["save"]) != "",
		EvictionPolicy: v["maxmemory-policy"],
		Sentinel:       q.cfg.SentinelMaster != "",
		WaitReplicas:   q.cfg.WaitReplicas,
	}
	if d.Sentinel {
		info, err := q.rdb.Info(ctx, "replication").Result()
		if err != nil {
			return Durability{}, unavailable("redis replication", err)
		}
		d.Replicas = strings.Count(info, "state=online")
	}
	return d, nil
}
