package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Load(Options{Path: "", Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Redis.URL != "redis://127.0.0.1:6379/0" || cfg.Slack.APIURL != "https://slack.com/api/" ||
		cfg.LLM.BaseURL != "http://127.0.0.1:11434/v1/" || cfg.HTTP.Addr != "127.0.0.1:9464" ||
		cfg.RateLimit.PerMinute != 30 || cfg.Threads.EngagedTTL != 30*time.Minute ||
		cfg.Slack.ConnectionsPerWorkspace != 2 || cfg.Worker.Concurrency != 20 ||
		cfg.LLM.Timeouts.FirstToken != 60*time.Second || cfg.LLM.Timeouts.Idle != 30*time.Second ||
		cfg.LLM.Timeouts.Total != 5*time.Minute {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
	if p := cfg.Providers(); len(p) != 1 || p[0].BaseURL != cfg.LLM.BaseURL {
		t.Fatalf("default provider: %+v", p)
	}
}

func TestPrecedence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "k.yaml")
	body := `
database:
  url: postgres://file@127.0.0.1/db
ratelimit:
  per_minute: 7
http:
  addr: 127.0.0.1:1111
llm:
  model: file-model
  providers:
    - name: local
      base_url: http://127.0.0.1:8000/v1/
      models: [a, b]
    - base_url: https://api.example.test/v1/
      api_key: sk-x
`
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("http-addr", "", "")
	if err := fs.Parse([]string{"--http-addr", "127.0.0.1:3333"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(Options{Path: file, Flags: fs, Getenv: env(map[string]string{
		"KONSTRUCT_RATELIMIT_PER_MINUTE":     "9",              // env beats file
		"KONSTRUCT_HTTP_ADDR":                "127.0.0.1:2222", // flag beats env
		"KONSTRUCT_THREADS_ENGAGED_TTL":      "5m",             // env for a key absent from the file
		"KONSTRUCT_LLM_TIMEOUTS_FIRST_TOKEN": "2s",
		"KONSTRUCT_SECRET_KEY_PREVIOUS":      "a, b",
	})})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database.URL != "postgres://file@127.0.0.1/db" || cfg.Database.MigrateURL != cfg.Database.URL {
		t.Errorf("database: %+v", cfg.Database)
	}
	if cfg.RateLimit.PerMinute != 9 {
		t.Errorf("per_minute = %d, want 9 from env", cfg.RateLimit.PerMinute)
	}
	if cfg.HTTP.Addr != "127.0.0.1:3333" {
		t.Errorf("http.addr = %q, want the flag", cfg.HTTP.Addr)
	}
	if cfg.Threads.EngagedTTL != 5*time.Minute || cfg.LLM.Timeouts.FirstToken != 2*time.Second {
		t.Errorf("durations from env: %v %v", cfg.Threads.EngagedTTL, cfg.LLM.Timeouts.FirstToken)
	}
	if len(cfg.SecretKeyPrevious) != 2 || cfg.SecretKeyPrevious[1] != "b" {
		t.Errorf("secret_key_previous = %q", cfg.SecretKeyPrevious)
	}
	p := cfg.Providers()
	if len(p) != 2 || p[0].Name != "local" || len(p[0].Models) != 2 || p[1].Name != "provider2" || p[1].APIKey != "sk-x" {
		t.Errorf("providers = %+v", p)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	good := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	tests := []struct {
		name  string
		env   map[string]string
		parts []Part
		want  []string // substrings of the error; nil = valid
	}{
		{"database required", nil, []Part{NeedDatabase}, []string{"database.url is required", "KONSTRUCT_DATABASE_URL"}},
		{"database scheme", map[string]string{"KONSTRUCT_DATABASE_URL": "mysql://x/y"}, []Part{NeedDatabase}, []string{"database.url must be a postgres:// URL"}},
		{"secret length", map[string]string{"KONSTRUCT_SECRET_KEY": "c2hvcnQ="}, []Part{NeedSecret}, []string{"secret_key must be base64 of 32 bytes, got 5 bytes"}},
		{"secret ok", map[string]string{"KONSTRUCT_SECRET_KEY": good}, []Part{NeedSecret}, nil},
		{"model required", nil, []Part{NeedLLM}, []string{"llm.model is required", "KONSTRUCT_LLM_MODEL"}},
		{"connections range", map[string]string{"KONSTRUCT_SLACK_CONNECTIONS_PER_WORKSPACE": "11"}, []Part{NeedSlack}, []string{"slack.connections_per_workspace must be between 1 and 10, got 11"}},
		{"bad duration", map[string]string{"KONSTRUCT_THREADS_ENGAGED_TTL": "-1m"}, []Part{NeedWorker}, []string{"threads.engaged_ttl must be a positive duration"}},
		{"log format", map[string]string{"KONSTRUCT_LOG_FORMAT": "xml"}, nil, []string{"log.format must be auto, json or text"}},
		{"all good", map[string]string{"KONSTRUCT_DATABASE_URL": "postgres://u@127.0.0.1/db", "KONSTRUCT_SECRET_KEY": good, "KONSTRUCT_LLM_MODEL": "m"},
			[]Part{NeedDatabase, NeedSecret, NeedRedis, NeedSlack, NeedLLM, NeedWorker, NeedHTTP}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Load(Options{Getenv: env(tt.env)})
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate(tt.parts...)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestBadDurationFromEnvFailsLoad(t *testing.T) {
	t.Parallel()
	_, err := Load(Options{Getenv: env(map[string]string{"KONSTRUCT_THREADS_ENGAGED_TTL": "soon"})})
	if err == nil {
		t.Fatal("want an error for an unparsable duration")
	}
}

func TestMissingExplicitFile(t *testing.T) {
	t.Parallel()
	_, err := Load(Options{Path: filepath.Join(t.TempDir(), "nope.yaml"), Getenv: env(nil)})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("err = %v", err)
	}
}

// TestLoadNamesBadNumbersAndDurations: a value that does not parse names
// its key, its variable and what is expected, from the environment or a file.
func TestLoadNamesBadNumbersAndDurations(t *testing.T) {
	file := filepath.Join(t.TempDir(), "k.yaml")
	if err := os.WriteFile(file, []byte("llm:\n  timeouts:\n    idle: forever\n    total: 300\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(Options{Path: file, Getenv: env(map[string]string{
		"KONSTRUCT_WORKER_CONCURRENCY":  "lots",
		"KONSTRUCT_THREADS_ENGAGED_TTL": "30",
	})})
	if err == nil {
		t.Fatal("Load accepted bad values")
	}
	for _, want := range []string{
		`worker.concurrency must be a whole number, got "lots"`, "KONSTRUCT_WORKER_CONCURRENCY",
		`threads.engaged_ttl must be a duration such as 30m, got "30"`, "KONSTRUCT_THREADS_ENGAGED_TTL",
		`llm.timeouts.idle must be a duration such as 30s, got "forever"`,
		`llm.timeouts.total must be a duration with a unit such as 5m, got 300`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// A value that does not parse does not hide the other problems.
func TestTypeErrorKeepsTheRest(t *testing.T) {
	t.Parallel()
	cfg, err := Load(Options{Getenv: env(map[string]string{
		"KONSTRUCT_RATELIMIT_PER_MINUTE": "x",
		"KONSTRUCT_DATABASE_URL":         "mysql://db",
	})})
	if err == nil || !strings.Contains(err.Error(), "ratelimit.per_minute must be a whole number") {
		t.Fatalf("err = %v", err)
	}
	if cfg == nil || cfg.RateLimit.PerMinute != 30 {
		t.Fatalf("cfg = %+v, want the default rate limit in place of the bad value", cfg)
	}
	if verr := cfg.Validate(NeedDatabase, NeedLLM); verr == nil ||
		!strings.Contains(verr.Error(), "database.url must be a postgres:// URL") || !strings.Contains(verr.Error(), "llm.model is required") {
		t.Errorf("Validate = %v", verr)
	}
}

func TestUnknownKeysListed(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "k.yaml")
	body := "llm:\n  modle: x\n  providers:\n    - name: a\n      base_url: http://127.0.0.1:1/v1/\nratelimit:\n  per_minute: 5\ntypo_top: 1\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(Options{Path: file, Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Unknown, ","); got != "llm.modle,typo_top" {
		t.Errorf("Unknown = %q", got)
	}
}

// TestRedisTopologies: Redis behind Sentinel or a Cluster from the
// environment (lists comma-separated) or the file, Sentinel and Cluster
// over redis.url, and errors that name the key.
func TestRedisTopologies(t *testing.T) {
	t.Parallel()
	cfg, err := Load(Options{Getenv: env(map[string]string{
		"KONSTRUCT_REDIS_URL":               "redis://:datapw@ignored:6379/2",
		"KONSTRUCT_REDIS_SENTINEL_MASTER":   "mymaster",
		"KONSTRUCT_REDIS_SENTINEL_ADDRS":    "10.0.0.1:26379, 10.0.0.2:26379,10.0.0.3:26379",
		"KONSTRUCT_REDIS_SENTINEL_PASSWORD": "sentinelpw",
	})})
	if err != nil {
		t.Fatal(err)
	}
	q := cfg.Queue()
	if q.SentinelMaster != "mymaster" || strings.Join(q.SentinelAddrs, " ") != "10.0.0.1:26379 10.0.0.2:26379 10.0.0.3:26379" ||
		q.SentinelPassword != "sentinelpw" || q.WaitReplicas != -1 || q.URL != "redis://:datapw@ignored:6379/2" {
		t.Errorf("sentinel from the environment: %+v", q)
	}
	if err := cfg.Validate(NeedRedis); err != nil {
		t.Errorf("valid sentinel config refused: %v", err)
	}

	file := filepath.Join(t.TempDir(), "k.yaml")
	if err := os.WriteFile(file, []byte("redis:\n  cluster:\n    addrs: [n1:7000, n2:7000]\n  wait_replicas: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = Load(Options{Path: file, Getenv: env(map[string]string{"KONSTRUCT_REDIS_CLUSTER_ADDRS": "c1:7000,c2:7000,c3:7000"})})
	if err != nil {
		t.Fatal(err)
	}
	if q := cfg.Queue(); strings.Join(q.ClusterAddrs, " ") != "c1:7000 c2:7000 c3:7000" || q.WaitReplicas != 0 {
		t.Errorf("cluster: env over file: %+v", q)
	}

	for _, tc := range []struct {
		name string
		vars map[string]string
		want []string // each in the error
	}{
		{"master without sentinels", map[string]string{"KONSTRUCT_REDIS_SENTINEL_MASTER": "m"},
			[]string{"redis.sentinel.addrs", "KONSTRUCT_REDIS_SENTINEL_ADDRS"}},
		{"sentinels without master", map[string]string{"KONSTRUCT_REDIS_SENTINEL_ADDRS": "s:26379"},
			[]string{"redis.sentinel.master"}},
		{"both", map[string]string{"KONSTRUCT_REDIS_SENTINEL_MASTER": "m", "KONSTRUCT_REDIS_SENTINEL_ADDRS": "s:26379", "KONSTRUCT_REDIS_CLUSTER_ADDRS": "c:7000"},
			[]string{"redis.cluster.addrs", "either"}},
		{"address without port", map[string]string{"KONSTRUCT_REDIS_CLUSTER_ADDRS": "c1:7000,c2"},
			[]string{"redis.cluster.addrs", `"c2"`}},
		{"cluster database", map[string]string{"KONSTRUCT_REDIS_CLUSTER_ADDRS": "c:7000", "KONSTRUCT_REDIS_URL": "redis://x/3"},
			[]string{"redis.url", "database 3"}},
		{"cluster wait", map[string]string{"KONSTRUCT_REDIS_CLUSTER_ADDRS": "c:7000", "KONSTRUCT_REDIS_WAIT_REPLICAS": "1"},
			[]string{"redis.wait_replicas", "redis.cluster.addrs"}},
		{"negative wait", map[string]string{"KONSTRUCT_REDIS_WAIT_REPLICAS": "-2"},
			[]string{"redis.wait_replicas"}},
		{"prefix with a brace", map[string]string{"KONSTRUCT_REDIS_PREFIX": "a{b}:"},
			[]string{"redis.prefix", "hash tags"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(Options{Getenv: env(tc.vars)})
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate(NeedRedis)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestDatabaseURLSeveralHosts: the multi-host URLs of PostgreSQL HA setups
// (libpq's form, which pgx reads) are accepted; a bad port is named.
func TestDatabaseURLSeveralHosts(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"postgres://app:pw@db1:5432,db2:5432/konstruct?target_session_attrs=read-write",
		"postgres://app@db1,db2:5433/konstruct?target_session_attrs=read-write",
		"postgresql://app@db1:5432,db2/konstruct?target_session_attrs=primary&sslmode=require",
		"postgres://app@[::1]:5432,[::2]/konstruct",
	} {
		cfg := &Config{}
		cfg.Database.URL, cfg.Log.Format, cfg.Log.Level = u, "auto", "info"
		if err := cfg.Validate(NeedDatabase); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for u, want := range map[string]string{
		"postgres://app@db1:x,db2/k": `port "x"`,
		"postgres://app@,db2/k":      "empty host",
		"postgres:///k":              "must name a host",
	} {
		cfg := &Config{}
		cfg.Database.URL, cfg.Log.Format, cfg.Log.Level = u, "auto", "info"
		if err := cfg.Validate(NeedDatabase); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %s", u, err, want)
		}
	}
}
