// Package config turns a config file, KONSTRUCT_* environment variables and
// command-line flags into one typed, validated Config. It is the only
// package that imports viper; every other package receives its own small
// Config struct built from this one.
//
// Precedence, highest first: flags, environment, file, defaults. The
// environment works for every key, also keys absent from the file:
// KONSTRUCT_ + the key upper-cased with "." → "_" (llm.timeouts.first_token
// → KONSTRUCT_LLM_TIMEOUTS_FIRST_TOKEN).
package config

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/tracing"
	"github.com/konstruct/konstruct/llm"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/worker"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Provider is one OpenAI-compatible endpoint in llm.providers.
type Provider struct {
	Name    string `mapstructure:"name"`
	BaseURL string `mapstructure:"base_url"`
	// APIKey is the key itself; APIKeyFile names a file holding it, and
	// KONSTRUCT_LLM_PROVIDERS_<NAME>_API_KEY beats both (secrets.go).
	APIKey     string   `mapstructure:"api_key"`
	APIKeyFile string   `mapstructure:"api_key_file"`
	Models     []string `mapstructure:"models"`
	// MaxConcurrency bounds the requests the provider serves at once,
	// across every process of the install, shared fairly between tenants
	// (0 = no bound).
	MaxConcurrency int `mapstructure:"max_concurrency"`
}

// RateLimit is one entry of slack.rate_limits.
type RateLimit struct {
	Method    string  `mapstructure:"method"`
	PerMinute float64 `mapstructure:"per_minute"`
	Burst     int     `mapstructure:"burst"`
}

// Config is the whole configuration of a konstruct process.
type Config struct {
	Database struct {
		URL        string `mapstructure:"url"`
		MigrateURL string `mapstructure:"migrate_url"`
	} `mapstructure:"database"`
	Redis struct {
		// URL is one Redis; with Sentinel or Cluster, its user, password,
		// database and TLS (rediss://) are the data nodes' and its host is
		// not used.
		URL string `mapstructure:"url"`
		// Prefix is prepended to every Redis key and asynq queue name; it lets
		// several installs (or test runs) share one Redis.
		Prefix string `mapstructure:"prefix"`
		// Sentinel puts Redis behind Sentinel (takes precedence over url):
		// the master's name, the sentinels' host:port (comma-separated in
		// the environment), and the sentinels' own password if they
		// require one.
		Sentinel struct {
			Master   string   `mapstructure:"master"`
			Addrs    []string `mapstructure:"addrs"`
			Password string   `mapstructure:"password"`
		} `mapstructure:"sentinel"`
		// Cluster is a Redis Cluster's seed nodes (takes precedence over url).
		Cluster struct {
			Addrs []string `mapstructure:"addrs"`
		} `mapstructure:"cluster"`
		// WaitReplicas is how many replicas must confirm each write before
		// it counts (-1, the default: 1 with Sentinel, else 0).
		WaitReplicas int `mapstructure:"wait_replicas"`
	} `mapstructure:"redis"`
	Slack struct {
		APIURL                  string `mapstructure:"api_url"`
		ConnectionsPerWorkspace int    `mapstructure:"connections_per_workspace"`
		// RateLimits override Slack's published tiers for the methods the
		// daemon writes with (file only): the budgets every process of the
		// install shares, per workspace (per channel for chat.postMessage).
		RateLimits []RateLimit `mapstructure:"rate_limits"`
	} `mapstructure:"slack"`
	LLM struct {
		BaseURL string `mapstructure:"base_url"`
		APIKey  string `mapstructure:"api_key"`
		// APIKeyFile names a file holding the single provider's key
		// (llm.api_key_file, KONSTRUCT_LLM_API_KEY_FILE), read at load.
		APIKeyFile string `mapstructure:"api_key_file"`
		// MaxConcurrency is the single provider's bound (llm.max_concurrency);
		// listed providers each have their own.
		MaxConcurrency int        `mapstructure:"max_concurrency"`
		Model          string     `mapstructure:"model"`
		Providers      []Provider `mapstructure:"providers"`
		Timeouts       struct {
			FirstToken time.Duration `mapstructure:"first_token"`
			Idle       time.Duration `mapstructure:"idle"`
			Total      time.Duration `mapstructure:"total"`
		} `mapstructure:"timeouts"`
	} `mapstructure:"llm"`
	SecretKey string `mapstructure:"secret_key"`
	// SecretKeyPrevious holds retired keys (comma-separated in the
	// environment) still accepted for decryption during a key rotation.
	SecretKeyPrevious []string `mapstructure:"secret_key_previous"`
	// StateDir holds what the daemon keeps on local disk: the intake spool
	// that records envelopes while Redis does not answer. Default:
	// $STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/konstruct.
	StateDir string `mapstructure:"state_dir"`
	HTTP     struct {
		Addr string `mapstructure:"addr"`
	} `mapstructure:"http"`
	RateLimit struct {
		PerMinute        int `mapstructure:"per_minute"`
		PerUserPerMinute int `mapstructure:"per_user_per_minute"`
	} `mapstructure:"ratelimit"`
	Threads struct {
		EngagedTTL time.Duration `mapstructure:"engaged_ttl"`
	} `mapstructure:"threads"`
	Worker struct {
		Concurrency int `mapstructure:"concurrency"`
		// TenantConcurrency caps one tenant's replies generated at once in
		// a process (0 = half of concurrency), so no tenant takes every worker.
		TenantConcurrency int `mapstructure:"tenant_concurrency"`
		// Streaming is "update" (coalesced chat.update edits of the
		// placeholder) or "native" (chat.startStream/appendStream/stopStream).
		Streaming string `mapstructure:"streaming"`
		// HistoryTokens bounds the thread context sent to the model.
		HistoryTokens int `mapstructure:"history_tokens"`
		// MaxAnswerTokens bounds the model's answer.
		MaxAnswerTokens int `mapstructure:"max_answer_tokens"`
		// MaxAnswerMessages bounds the Slack messages of one answer.
		MaxAnswerMessages int `mapstructure:"max_answer_messages"`
	} `mapstructure:"worker"`
	Log struct {
		Format string `mapstructure:"format"` // auto | json | text
		Level  string `mapstructure:"level"`  // debug | info | warn | error
	} `mapstructure:"log"`
	// Tracing exports a trace per message by OTLP/HTTP; off without an
	// endpoint (internal/tracing).
	Tracing struct {
		OTLPEndpoint string  `mapstructure:"otlp_endpoint"`
		SampleRatio  float64 `mapstructure:"sample_ratio"`
		// Headers go with every export (a collector's authorization):
		// secrets. In the environment: name=value,name=value.
		Headers map[string]string `mapstructure:"headers"`
	} `mapstructure:"tracing"`

	// File is the config file that was read, "" if none.
	File string `mapstructure:"-"`
	// keyErrs are the API key files that could not be read (secrets.go),
	// reported by Validate(NeedLLM) only: a command that needs no LLM
	// does not fail over them.
	keyErrs []error
	// Unknown lists the keys of the file that no setting has (typos such as
	// llm.modle), for the caller to warn about.
	Unknown []string `mapstructure:"-"`
}

// defaults lists every key with its default; it is also the list of keys
// the environment can set.
var defaults = map[string]any{
	"database.url":                    "",
	"database.migrate_url":            "",
	"redis.url":                       "redis://127.0.0.1:6379/0",
	"redis.prefix":                    "",
	"redis.sentinel.master":           "",
	"redis.sentinel.addrs":            []string{},
	"redis.sentinel.password":         "",
	"redis.cluster.addrs":             []string{},
	"redis.wait_replicas":             -1,
	"slack.api_url":                   "https://slack.com/api/",
	"slack.connections_per_workspace": 2,
	"llm.base_url":                    "http://127.0.0.1:11434/v1/",
	"llm.api_key":                     "",
	"llm.api_key_file":                "",
	"llm.max_concurrency":             0,
	"llm.model":                       "",
	"llm.timeouts.first_token":        shortDuration(llm.DefaultFirstTokenTimeout),
	"llm.timeouts.idle":               shortDuration(llm.DefaultIdleTimeout),
	"llm.timeouts.total":              shortDuration(llm.DefaultTotalTimeout),
	"secret_key":                      "",
	"secret_key_previous":             []string{},
	"state_dir":                       "",
	"http.addr":                       "127.0.0.1:9464",
	"ratelimit.per_minute":            queue.DefaultRatePerMinute,
	"ratelimit.per_user_per_minute":   queue.DefaultRatePerUserPerMinute,
	"threads.engaged_ttl":             shortDuration(queue.DefaultEngagedTTL),
	"worker.concurrency":              worker.DefaultConcurrency,
	"worker.tenant_concurrency":       0,
	"worker.streaming":                worker.StreamingUpdate,
	"worker.history_tokens":           worker.DefaultHistoryTokens,
	"worker.max_answer_tokens":        worker.DefaultMaxAnswerTokens,
	"worker.max_answer_messages":      worker.DefaultMaxAnswerMessages,
	"log.format":                      "auto",
	"log.level":                       "info",
	"tracing.otlp_endpoint":           "",
	"tracing.sample_ratio":            1.0,
	"tracing.headers":                 map[string]string{},
}

// Keys returns every configuration key (llm.providers is file-only).
func Keys() []string {
	keys := make([]string, 0, len(defaults))
	for k := range defaults {
		keys = append(keys, k)
	}
	return keys
}

// EnvName returns the environment variable for a key.
func EnvName(key string) string {
	return "KONSTRUCT_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// DefaultStateDir is state_dir when neither it nor systemd's STATE_DIRECTORY is set.
const DefaultStateDir = "/var/lib/konstruct"

// DefaultPaths are searched, in order, when no --config or KONSTRUCT_CONFIG is given.
var DefaultPaths = []string{"./konstruct.yaml", "/etc/konstruct/konstruct.yaml"}

// Options says where Load looks.
type Options struct {
	// Path is --config; "" falls back to KONSTRUCT_CONFIG, then DefaultPaths.
	Path string
	// Getenv reads the environment (os.Getenv when nil).
	Getenv func(string) string
	// Flags, if set, may override keys: a changed flag named like the key
	// with "." and "_" turned into "-" (http.addr → --http-addr) wins over
	// everything else.
	Flags *pflag.FlagSet
}

// Load reads the configuration. It does not validate: call Validate with
// the parts the command needs. When a number or duration does not parse,
// Load returns the error together with a Config that has that key at its
// default, so that the caller can report the other problems with it.
func Load(opts Options) (*Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	v := viper.New()
	for k, d := range defaults {
		v.SetDefault(k, d)
	}

	path := opts.Path
	if path == "" {
		path = getenv("KONSTRUCT_CONFIG")
	}
	explicit := path != ""
	if !explicit {
		for _, p := range DefaultPaths {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
	}
	if path != "" {
		v.SetConfigFile(path)
		if !strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".yml") && !strings.HasSuffix(path, ".json") && !strings.HasSuffix(path, ".toml") {
			v.SetConfigType("yaml")
		}
		if err := v.ReadInConfig(); err != nil {
			var notFound viper.ConfigFileNotFoundError
			if errors.As(err, &notFound) || errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("config file %s: not found", path)
			}
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
		if err := checkPrivate(v, path); err != nil {
			return nil, err
		}
	}

	// Environment, then flags, as explicit overrides: viper's own
	// AutomaticEnv reads the process environment only, and run() is called
	// by tests with an environment of its own.
	for k := range defaults {
		if opts.Flags != nil {
			if f := opts.Flags.Lookup(flagName(k)); f != nil && f.Changed {
				v.Set(k, f.Value.String())
				continue
			}
		}
		if val, ok := lookup(getenv, EnvName(k)); ok {
			switch defaults[k].(type) {
			case []string:
				v.Set(k, splitList(val))
			case map[string]string:
				v.Set(k, splitMap(val))
			default:
				v.Set(k, val)
			}
		}
	}

	// A key that does not parse is reported, and set back to its default
	// so that the rest still loads: Load then returns the Config with the
	// error, and a caller can report every other problem in the same go.
	typeErr := checkTypes(v)
	var cfg Config
	if err := v.Unmarshal(&cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg.File = path
	cfg.Unknown = unknownKeys(v)
	cfg.resolveAPIKeys(getenv)
	if cfg.Database.MigrateURL == "" {
		cfg.Database.MigrateURL = cfg.Database.URL
	}
	if cfg.StateDir == "" {
		// systemd sets STATE_DIRECTORY (a colon-separated list) for StateDirectory=.
		dir, _, _ := strings.Cut(getenv("STATE_DIRECTORY"), ":")
		cfg.StateDir = cmp.Or(dir, DefaultStateDir)
	}
	if !strings.HasSuffix(cfg.Slack.APIURL, "/") && cfg.Slack.APIURL != "" {
		cfg.Slack.APIURL += "/"
	}
	return &cfg, typeErr
}

// checkTypes names the key of a number or duration that does not parse,
// before viper's decoder reports it without the key's variable or the
// expected form.
func checkTypes(v *viper.Viper) error {
	var errs []error
	for k, d := range defaults {
		val := v.Get(k)
		raw, ok := val.(string)
		if !ok {
			// A bare number in a file would become nanoseconds.
			if dv, isDur := d.(string); isDur && isDuration(dv) {
				switch val.(type) {
				case int, int64, float64, uint64:
					errs = append(errs, &KeyError{Key: k, Reason: fmt.Sprintf("must be a duration with a unit such as %s, got %v", dv, val)})
					v.Set(k, dv)
				}
			}
			continue
		}
		raw = strings.TrimSpace(raw)
		switch dv := d.(type) {
		case int:
			if _, err := strconv.Atoi(raw); err != nil {
				errs = append(errs, &KeyError{Key: k, Reason: fmt.Sprintf("must be a whole number, got %q", raw)})
				v.Set(k, dv)
			}
		case float64:
			if _, err := strconv.ParseFloat(raw, 64); err != nil {
				errs = append(errs, &KeyError{Key: k, Reason: fmt.Sprintf("must be a number, got %q", raw)})
				v.Set(k, dv)
			}
		case string:
			if !isDuration(dv) {
				continue // not a duration key
			}
			if _, err := time.ParseDuration(raw); err != nil {
				errs = append(errs, &KeyError{Key: k, Reason: fmt.Sprintf("must be a duration such as %s, got %q", dv, raw)})
				v.Set(k, dv)
			}
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// unknownKeys returns the keys set (by the file) that are no setting.
func unknownKeys(v *viper.Viper) []string {
	var out []string
	for _, k := range v.AllKeys() {
		if _, ok := defaults[k]; ok || k == "llm.providers" || strings.HasPrefix(k, "llm.providers.") || k == "slack.rate_limits" ||
			strings.HasPrefix(k, "tracing.headers.") {
			continue
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// isDuration reports whether a default is a duration ("30s"), which makes
// its key a duration key.
func isDuration(s string) bool {
	_, err := time.ParseDuration(s)
	return s != "" && err == nil
}

func lookup(getenv func(string) string, name string) (string, bool) {
	val := getenv(name)
	return val, val != ""
}

// splitMap reads name=value,name=value (as OTEL_EXPORTER_OTLP_HEADERS);
// an entry without "=" is kept with an empty value, for Validate to name.
func splitMap(s string) map[string]string {
	out := map[string]string{}
	for _, p := range splitList(s) {
		k, val, _ := strings.Cut(p, "=")
		out[strings.TrimSpace(k)] = strings.TrimSpace(val)
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// trimList drops the blanks around and between list entries (a file may
// give "a:1, b:2" as one string).
func trimList(list []string) []string {
	var out []string
	for _, item := range list {
		out = append(out, splitList(item)...)
	}
	return out
}

func flagName(key string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// Part names a group of keys a command needs.
type Part int

const (
	NeedDatabase Part = iota // database.url
	NeedSecret               // secret_key
	NeedRedis                // redis.url
	NeedSlack                // slack.api_url
	NeedLLM                  // llm.model and a provider
	NeedWorker               // worker.*, ratelimit, threads
	NeedHTTP                 // http.addr
)

// KeyError names the key that is wrong and what is expected.
type KeyError struct {
	Key    string
	Reason string
}

func (e *KeyError) Error() string {
	msg := fmt.Sprintf("config: %s %s", e.Key, e.Reason)
	if e.Key != "llm.providers" && !strings.Contains(e.Key, "[") {
		msg += fmt.Sprintf(" (set %s in the config file or %s)", e.Key, EnvName(e.Key))
	}
	return msg
}

// Validate checks the keys that the given parts need and returns every
// problem found, joined.
func (c *Config) Validate(parts ...Part) error {
	var errs []error
	bad := func(key, reason string) { errs = append(errs, &KeyError{Key: key, Reason: reason}) }
	for _, p := range parts {
		switch p {
		case NeedDatabase:
			if c.Database.URL == "" {
				bad("database.url", "is required: a postgres:// URL for the runtime role")
			} else if err := checkPostgresURL(c.Database.URL); err != nil {
				bad("database.url", err.Error())
			}
			// migrate_url defaults to url: a bad url is reported once.
			if c.Database.MigrateURL != "" && c.Database.MigrateURL != c.Database.URL {
				if err := checkPostgresURL(c.Database.MigrateURL); err != nil {
					bad("database.migrate_url", err.Error())
				}
			}
		case NeedSecret:
			if c.SecretKey == "" {
				bad("secret_key", "is required: base64 of 32 random bytes (e.g. `openssl rand -base64 32`)")
			} else if err := checkKey(c.SecretKey); err != nil {
				bad("secret_key", err.Error())
			}
			for _, k := range c.SecretKeyPrevious {
				if err := checkKey(k); err != nil {
					bad("secret_key_previous", err.Error())
				}
			}
		case NeedRedis:
			errs = append(errs, keyed(c.Queue().Validate(), map[string]string{
				"url": "redis.url", "prefix": "redis.prefix", "sentinel_master": "redis.sentinel.master",
				"sentinel_addrs": "redis.sentinel.addrs", "cluster_addrs": "redis.cluster.addrs", "wait_replicas": "redis.wait_replicas"})...)
			if c.Redis.WaitReplicas < -1 {
				bad("redis.wait_replicas", fmt.Sprintf("must be 0 or more, got %d", c.Redis.WaitReplicas))
			}
		case NeedSlack:
			if err := checkURL(c.Slack.APIURL, "http", "https"); err != nil {
				bad("slack.api_url", err.Error())
			}
			for i, r := range c.Slack.RateLimits {
				if _, known := queue.DefaultSlackTiers[r.Method]; !known {
					bad(fmt.Sprintf("slack.rate_limits[%d].method", i), fmt.Sprintf("%q is not a method the daemon budgets (%s)", r.Method, strings.Join(slices.Sorted(maps.Keys(queue.DefaultSlackTiers)), ", ")))
				} else if r.PerMinute <= 0 {
					bad(fmt.Sprintf("slack.rate_limits[%d].per_minute", i), "must be positive")
				}
			}
			if n := c.Slack.ConnectionsPerWorkspace; n < 1 || n > 10 {
				bad("slack.connections_per_workspace", fmt.Sprintf("must be between 1 and 10, got %d", n))
			}
		case NeedLLM:
			if c.LLM.Model == "" {
				bad("llm.model", "is required: the model used when an agent names none (e.g. llama3.1:8b)")
			}
			errs = append(errs, c.keyErrs...)
			errs = append(errs, keyed(c.LLMConfig().Validate(), func(field string) string {
				if len(c.LLM.Providers) == 0 && strings.HasPrefix(field, "providers[0].") {
					return "llm." + strings.TrimPrefix(field, "providers[0].")
				}
				return "llm." + field
			})...)
			t := c.LLM.Timeouts
			for key, d := range map[string]time.Duration{"llm.timeouts.first_token": t.FirstToken, "llm.timeouts.idle": t.Idle, "llm.timeouts.total": t.Total} {
				if d == 0 {
					bad(key, "must be a positive duration such as 30s")
				}
			}
		case NeedWorker:
			errs = append(errs, keyed(c.WorkerConfig().Validate(), func(field string) string { return "worker." + field })...)
			errs = append(errs, keyed(c.Queue().Validate(), map[string]string{
				"rate_per_minute": "ratelimit.per_minute", "rate_per_user_per_minute": "ratelimit.per_user_per_minute",
				"engaged_ttl": "threads.engaged_ttl"})...)
			if c.Worker.Concurrency == 0 {
				bad("worker.concurrency", "must be at least 1, got 0")
			}
			if c.RateLimit.PerMinute == 0 {
				bad("ratelimit.per_minute", "must be at least 1, got 0")
			}
			if c.RateLimit.PerUserPerMinute == 0 {
				bad("ratelimit.per_user_per_minute", "must be at least 1, got 0")
			}
			if c.Threads.EngagedTTL == 0 {
				bad("threads.engaged_ttl", "must be a positive duration such as 30m")
			}
		case NeedHTTP:
			if c.HTTP.Addr == "" {
				bad("http.addr", "is required (host:port), e.g. 127.0.0.1:9464")
			} else if !strings.Contains(c.HTTP.Addr, ":") {
				bad("http.addr", fmt.Sprintf("must be host:port, got %q", c.HTTP.Addr))
			}
		}
	}
	// Like log.*, checked for every command: a daemon must not start with
	// traces it cannot send, and doctor reports them.
	errs = append(errs, keyed(c.TracingConfig().Validate(), func(field string) string { return "tracing." + field })...)
	switch c.Log.Format {
	case "auto", "json", "text":
	default:
		bad("log.format", fmt.Sprintf("must be auto, json or text, got %q", c.Log.Format))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", fmt.Sprintf("must be debug, info, warn or error, got %q", c.Log.Level))
	}
	return errors.Join(errs...)
}

// The package configurations made of this one: each package validates its
// own (Validate, via keyed) and owns its defaults; cmd/konstruct adds the
// collaborators (loggers, metrics, clients).

// Queue is the Redis side: redis.*, ratelimit.*, threads.*.
func (c *Config) Queue() queue.Config {
	r := c.Redis
	qc := queue.Config{URL: r.URL, Prefix: r.Prefix, RatePerMinute: c.RateLimit.PerMinute,
		RatePerUserPerMinute: c.RateLimit.PerUserPerMinute, EngagedTTL: c.Threads.EngagedTTL,
		SentinelMaster: strings.TrimSpace(r.Sentinel.Master), SentinelAddrs: trimList(r.Sentinel.Addrs),
		SentinelPassword: r.Sentinel.Password, ClusterAddrs: trimList(r.Cluster.Addrs), WaitReplicas: r.WaitReplicas}
	for _, r := range c.Slack.RateLimits {
		if qc.SlackTiers == nil {
			qc.SlackTiers = map[string]queue.SlackTier{}
		}
		t := queue.DefaultSlackTiers[r.Method]
		t.PerMinute, t.Burst = r.PerMinute, cmp.Or(r.Burst, t.Burst, 1)
		qc.SlackTiers[r.Method] = t
	}
	return qc
}

// WorkerConfig is worker.*.
func (c *Config) WorkerConfig() worker.Config {
	return worker.Config{
		Concurrency: c.Worker.Concurrency, TenantConcurrency: c.Worker.TenantConcurrency, Streaming: c.Worker.Streaming,
		HistoryTokens: c.Worker.HistoryTokens, MaxAnswerTokens: c.Worker.MaxAnswerTokens, MaxAnswerMessages: c.Worker.MaxAnswerMessages,
	}
}

// TracingConfig is tracing.*.
func (c *Config) TracingConfig() tracing.Config {
	return tracing.Config{Endpoint: strings.TrimSpace(c.Tracing.OTLPEndpoint), SampleRatio: c.Tracing.SampleRatio, Headers: c.Tracing.Headers}
}

// LLMConfig is llm.*: the providers in fallback order, the default model
// and the timeouts.
func (c *Config) LLMConfig() llm.Config {
	var ps []llm.Provider
	for _, p := range c.Providers() {
		ps = append(ps, llm.Provider{Name: p.Name, BaseURL: p.BaseURL, APIKey: p.APIKey, Models: p.Models, MaxConcurrency: p.MaxConcurrency})
	}
	t := c.LLM.Timeouts
	return llm.Config{Providers: ps, DefaultModel: c.LLM.Model, Timeouts: llm.Timeouts{FirstToken: t.FirstToken, Idle: t.Idle, Total: t.Total}}
}

// keyed turns the *konstruct.FieldError values of a package's Validate into
// KeyErrors naming the config key: key maps a field to it, as a map or a
// function. Other errors are kept as they are.
func keyed[K map[string]string | func(string) string](err error, key K) []error {
	if err == nil {
		return nil
	}
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	var out []error
	for _, e := range list {
		var fe *konstruct.FieldError
		if !errors.As(e, &fe) {
			out = append(out, e)
			continue
		}
		var k string
		switch f := any(key).(type) {
		case map[string]string:
			if k = f[fe.Field]; k == "" {
				continue // a field this part does not own
			}
		case func(string) string:
			k = f(fe.Field)
		}
		out = append(out, &KeyError{Key: k, Reason: fe.Reason})
	}
	return out
}

// shortDuration prints a default like an operator writes it (30m, not 30m0s).
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Providers returns llm.providers, or the single provider made of
// llm.base_url and llm.api_key when the list is empty.
func (c *Config) Providers() []Provider {
	if len(c.LLM.Providers) > 0 {
		out := make([]Provider, len(c.LLM.Providers))
		for i, p := range c.LLM.Providers {
			if p.Name == "" {
				p.Name = fmt.Sprintf("provider%d", i+1)
			}
			out[i] = p
		}
		return out
	}
	return []Provider{{Name: "default", BaseURL: c.LLM.BaseURL, APIKey: c.LLM.APIKey, MaxConcurrency: c.LLM.MaxConcurrency}}
}

func checkURL(raw string, schemes ...string) error {
	if raw == "" {
		return errors.New("is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a valid URL")
	}
	for _, s := range schemes {
		if u.Scheme == s {
			if u.Host == "" && s != "unix" {
				return fmt.Errorf("must name a host, got %q", konstruct.Redact(raw))
			}
			return nil
		}
	}
	return fmt.Errorf("must be a %s:// URL, got %q", schemes[0], konstruct.Redact(raw))
}

// checkPostgresURL checks a postgres:// URL, which may name several hosts
// (postgres://user@h1:5432,h2:5432/db?target_session_attrs=read-write, a
// form net/url does not parse when a port is not last).
func checkPostgresURL(raw string) error {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || (scheme != "postgres" && scheme != "postgresql") {
		return checkURL(raw, "postgres", "postgresql")
	}
	authority, _, _ := strings.Cut(rest, "/")
	authority, _, _ = strings.Cut(authority, "?")
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		authority = authority[i+1:]
	}
	if authority == "" {
		return fmt.Errorf("must name a host, got %q", konstruct.Redact(raw))
	}
	for _, hp := range strings.Split(authority, ",") {
		host, port := hp, ""
		if strings.HasPrefix(hp, "[") { // [::1]:5432
			if end := strings.Index(hp, "]"); end > 0 {
				host, port = hp[:end+1], strings.TrimPrefix(hp[end+1:], ":")
			}
		} else if h, p, found := strings.Cut(hp, ":"); found {
			host, port = h, p
		}
		if host == "" {
			return fmt.Errorf("names an empty host in %q", konstruct.Redact(raw))
		}
		if port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("names host %s with port %q, not a number", host, port)
			}
		}
	}
	// The rest as a URL with the first host alone (net/url checks the
	// query and escapes).
	first := strings.Split(authority, ",")[0]
	if _, err := url.Parse(scheme + "://" + strings.Replace(rest, authority, first, 1)); err != nil {
		return errors.New("is not a valid URL")
	}
	return nil
}

func checkKey(k string) error {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return errors.New("must be base64 of 32 bytes (not valid base64)")
	}
	if len(b) != 32 {
		return fmt.Errorf("must be base64 of 32 bytes, got %d bytes", len(b))
	}
	return nil
}
