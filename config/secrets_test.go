package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, body string, perm os.FileMode) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, []byte(body), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(file, perm); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return file
}

// A config file that holds a secret and that its group or others can read
// is refused, with the chmod that fixes it.
func TestConfigFileWithSecretsMustBePrivate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		perm       os.FileMode
		refused    string // the secret named in the refusal; "" = accepted
	}{
		{"secret key, world-readable", "secret_key: c2VjcmV0\n", 0o644, "secret_key"},
		{"secret key, group-readable", "secret_key: c2VjcmV0\n", 0o640, "secret_key"},
		{"secret key, private", "secret_key: c2VjcmV0\n", 0o600, ""},
		{"database password", "database:\n  url: postgres://app:hunter2@db/k\n", 0o644, "database.url"},
		{"database keyword password", "database:\n  migrate_url: host=db user=owner password=hunter2\n", 0o604, "database.migrate_url"},
		{"database without password", "database:\n  url: postgres://app@db/k\n", 0o644, ""},
		{"sentinel password", "redis:\n  sentinel:\n    master: m\n    addrs: [s1:26379]\n    password: hunter2\n", 0o644, "redis.sentinel.password"},
		{"llm key", "llm:\n  api_key: sk-abcdefghijkl\n", 0o644, "llm.api_key"},
		{"provider key", "llm:\n  providers:\n    - name: cloud\n      base_url: https://api.example.com/v1/\n      api_key: k\n", 0o644, "llm.providers[0].api_key"},
		{"provider key file", "llm:\n  providers:\n    - name: cloud\n      base_url: https://api.example.com/v1/\n      api_key_file: /run/secrets/k\n", 0o644, ""},
		{"redis password", "redis:\n  url: redis://:hunter2@127.0.0.1:6379/0\n", 0o644, "redis.url"},
		{"no secrets", "ratelimit:\n  per_minute: 10\n", 0o644, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			file := writeFile(t, "konstruct.yaml", tt.body, tt.perm)
			_, err := Load(Options{Path: file, Getenv: env(nil)})
			if tt.refused == "" {
				if err != nil {
					t.Fatalf("Load = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("a file holding %s with mode %04o was accepted", tt.refused, tt.perm)
			}
			for _, want := range []string{"chmod 600 " + file, tt.refused} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// LLM API keys come from the environment or a file as well as the config
// file: the environment first, then the key file, then api_key.
func TestAPIKeySources(t *testing.T) {
	t.Parallel()
	keyFile := writeFile(t, "key", "  sk-from-file\n", 0o400)
	providers := "llm:\n  providers:\n    - name: local\n      base_url: http://127.0.0.1:8000/v1/\n" +
		"    - name: cloud-eu\n      base_url: https://api.example.com/v1/\n      api_key_file: " + keyFile + "\n" +
		"    - name: other\n      base_url: https://other.example.com/v1/\n      api_key: sk-in-file\n"
	cfgFile := writeFile(t, "konstruct.yaml", providers, 0o600)

	tests := []struct {
		name string
		path string
		env  map[string]string
		want map[string]string // provider → key
	}{
		{"single from env", "", map[string]string{"KONSTRUCT_LLM_API_KEY": "sk-env"}, map[string]string{"default": "sk-env"}},
		{"single from a file named in env", "", map[string]string{"KONSTRUCT_LLM_API_KEY_FILE": keyFile}, map[string]string{"default": "sk-from-file"}},
		{"single: the key beats the file", "", map[string]string{"KONSTRUCT_LLM_API_KEY": "sk-env", "KONSTRUCT_LLM_API_KEY_FILE": keyFile}, map[string]string{"default": "sk-env"}},
		{"providers", cfgFile, nil, map[string]string{"local": "", "cloud-eu": "sk-from-file", "other": "sk-in-file"}},
		{"providers from env", cfgFile, map[string]string{"KONSTRUCT_LLM_PROVIDERS_CLOUD_EU_API_KEY": "sk-env-eu", "KONSTRUCT_LLM_PROVIDERS_LOCAL_API_KEY": "sk-env-local"},
			map[string]string{"local": "sk-env-local", "cloud-eu": "sk-env-eu", "other": "sk-in-file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"KONSTRUCT_LLM_MODEL": "m"}
			for k, v := range tt.env {
				env[k] = v
			}
			cfg, err := Load(Options{Path: tt.path, Getenv: func(k string) string { return env[k] }})
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(NeedLLM); err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, p := range cfg.LLMConfig().Providers {
				got[p.Name] = p.APIKey
			}
			for name, key := range tt.want {
				if got[name] != key {
					t.Errorf("provider %s key = %q, want %q", name, got[name], key)
				}
			}
		})
	}
}

// A key file that cannot be read fails the commands that use the LLM, and
// only those.
func TestAPIKeyFileErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope")
	empty := writeFile(t, "empty", "\n", 0o600)
	for name, env := range map[string]map[string]string{
		"missing": {"KONSTRUCT_LLM_API_KEY_FILE": missing},
		"empty":   {"KONSTRUCT_LLM_API_KEY_FILE": empty},
	} {
		env["KONSTRUCT_LLM_MODEL"] = "m"
		env["KONSTRUCT_DATABASE_URL"] = "postgres://app@db/k"
		cfg, err := Load(Options{Getenv: func(k string) string { return env[k] }})
		if err != nil {
			t.Fatalf("%s: Load = %v", name, err)
		}
		if err := cfg.Validate(NeedDatabase); err != nil {
			t.Errorf("%s: a command without the LLM fails: %v", name, err)
		}
		if err := cfg.Validate(NeedLLM); err == nil || !strings.Contains(err.Error(), "llm.api_key_file") {
			t.Errorf("%s: Validate(NeedLLM) = %v", name, err)
		}
	}
	both := writeFile(t, "k.yaml", "llm:\n  providers:\n    - name: a\n      base_url: http://a/v1/\n      api_key: x\n      api_key_file: "+empty+"\n", 0o600)
	cfg, err := Load(Options{Path: both, Getenv: env(map[string]string{"KONSTRUCT_LLM_MODEL": "m"})})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(NeedLLM); err == nil || !strings.Contains(err.Error(), "llm.providers[0].api_key_file and llm.providers[0].api_key are both set") {
		t.Errorf("both set: %v", err)
	}
}

// A malformed URL is reported without its password.
func TestURLErrorsHidePasswords(t *testing.T) {
	t.Parallel()
	for key, val := range map[string]string{
		"KONSTRUCT_DATABASE_URL":         "postgres:/konstruct_app:hunter2@127.0.0.1/konstruct",
		"KONSTRUCT_DATABASE_MIGRATE_URL": "host=127.0.0.1 user=owner password=hunter2 dbname=k",
		"KONSTRUCT_LLM_BASE_URL":         "ftp://user:hunter2@llm.internal/v1/",
	} {
		e := map[string]string{"KONSTRUCT_DATABASE_URL": "postgres://app@db/k", "KONSTRUCT_LLM_MODEL": "m", key: val}
		cfg, err := Load(Options{Getenv: env(e)})
		if err != nil {
			t.Fatal(err)
		}
		err = cfg.Validate(NeedDatabase, NeedLLM)
		if err == nil {
			t.Fatalf("%s=%s accepted", key, val)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the password: %v", key, err)
		}
	}
}
