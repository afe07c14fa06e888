package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/konstruct/konstruct/internal/testenv"
)

// writeConfig writes a config file with mode perm and returns its path.
func writeConfig(t *testing.T, body string, perm os.FileMode) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "konstruct.yaml")
	if err := os.WriteFile(file, []byte(body), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(file, perm); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return file
}

// agent set --providers stores the tenant's providers in order, and a name
// llm.providers does not configure is refused, naming the configured ones.
func TestAgentSetProviders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	file := writeConfig(t, "llm:\n  providers:\n    - name: local\n      base_url: "+e.llm.URL()+
		"\n    - name: cloud\n      base_url: https://api.example.com/v1/\n", 0o600)
	vars := e.with("KONSTRUCT_CONFIG", file)
	id := strings.TrimSpace(mustCLI(t, vars, "tenant", "create", "--name", "OnPrem", "--slug", "onprem").stdout)

	mustCLI(t, vars, "agent", "set", "--tenant", "onprem", "--name", "Mara", "--role", "R", "--persona", "P", "--providers", "local")
	st := testenv.OpenStore(t, e.pg.RuntimeURL, nil)
	ag, err := st.ActiveAgent(context.Background(), id)
	if err != nil || !slices.Equal(ag.Providers, []string{"local"}) {
		t.Fatalf("providers = %q, %v", ag.Providers, err)
	}
	mustCLI(t, vars, "agent", "set", "--tenant", "onprem", "--name", "Mara", "--role", "R", "--persona", "P", "--providers", "cloud,local")
	if ag, _ = st.ActiveAgent(context.Background(), id); !slices.Equal(ag.Providers, []string{"cloud", "local"}) {
		t.Fatalf("providers = %q, want [cloud local]", ag.Providers)
	}
	failCLI(t, vars, []string{"--providers", `"clod"`, "local, cloud"},
		"agent", "set", "--tenant", "onprem", "--name", "Mara", "--role", "R", "--persona", "P", "--providers", "local,clod")
	if ag, _ = st.ActiveAgent(context.Background(), id); !slices.Equal(ag.Providers, []string{"cloud", "local"}) {
		t.Fatalf("a refused set changed the providers to %q", ag.Providers)
	}
}

// Passwords in URLs never reach what the CLI prints: a malformed
// database.url in a config error, keyword-style connection strings and an
// llm base_url with user:password in doctor's table.
func TestCredentialsNotPrinted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	r := cli(t, e.with("KONSTRUCT_DATABASE_URL", "postgres:/konstruct_app:hunter2@127.0.0.1/konstruct"), "tenant", "list")
	if r.err == nil || strings.Contains(r.line()+r.stderr+r.stdout, "hunter2") {
		t.Errorf("malformed database.url: %q / %q", r.line(), r.stderr)
	}
	r = cli(t, e.with(
		"KONSTRUCT_DATABASE_URL", "host=127.0.0.1 port=1 user=konstruct_app password=hunter2 dbname=konstruct connect_timeout=2",
		"KONSTRUCT_LLM_BASE_URL", "http://llmuser:sekrit@127.0.0.1:1/v1/",
	), "doctor")
	out := r.stdout + r.stderr + r.line()
	for _, secret := range []string{"hunter2", "sekrit"} {
		if strings.Contains(out, secret) {
			t.Errorf("doctor printed %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "llmuser:[REDACTED]@127.0.0.1:1") {
		t.Errorf("doctor does not show which LLM URL failed:\n%s", out)
	}
}

// A config file holding secrets that others can read is refused with the fix.
func TestConfigFileWithSecretsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	file := writeConfig(t, "secret_key: "+e.key+"\n", 0o644)
	failCLI(t, e.with("KONSTRUCT_CONFIG", file), []string{"chmod 600 " + file, "secret_key"}, "tenant", "list")
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, e.with("KONSTRUCT_CONFIG", file), "tenant", "list")
}
