package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/slacksim"
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

// Tokens stored before they were bound to their row still work, doctor says
// so, and workspace rekey binds them (and doctor is satisfied).
func TestDoctorAndRekeyBindOldTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	mustCLI(t, e.vars, "tenant", "create", "--name", "Umbrella", "--slug", "umb")
	ws := e.sim.AddWorkspace(slacksim.WorkspaceSpec{})
	add := e.with("SLACK_APP_TOKEN", ws.AppToken, "SLACK_BOT_TOKEN", ws.BotToken)
	mustCLI(t, add, "workspace", "add", "--tenant", "umb")

	// The row as the previous release stored it: no associated data, a bare key id.
	raw, err := base64.StdEncoding.DecodeString(e.key)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(raw)
	gcm, _ := cipher.NewGCM(block)
	seal := func(s string) []byte {
		nonce := make([]byte, gcm.NonceSize())
		_, _ = rand.Read(nonce)
		return gcm.Seal(nonce, nonce, []byte(s), nil)
	}
	rows := adminQuery(t, e.pg.AdminURL, `UPDATE workspaces SET app_token_enc = $1, bot_token_enc = $2, key_id = split_part(key_id, ':', 2)
		WHERE team_id = $3 RETURNING key_id`, seal(ws.AppToken), seal(ws.BotToken), ws.TeamID)
	rows.Close()
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	out := cli(t, e.vars, "doctor").stdout
	if !strings.Contains(out, "token binding") || !strings.Contains(out, ws.TeamID) || !strings.Contains(out, "konstruct workspace rekey") {
		t.Errorf("doctor does not point at the unbound tokens:\n%s", out)
	}
	if !strings.Contains(out, "workspace "+ws.TeamID+"  PASS") && !strings.Contains(out, "bot and app tokens accepted") {
		t.Errorf("the unbound tokens no longer work:\n%s", out)
	}
	mustCLI(t, e.vars, "workspace", "rekey")
	if n := adminCount(t, e.pg.AdminURL, `SELECT count(*) FROM workspaces WHERE key_id LIKE 'v2:%'`); n != 1 {
		t.Fatalf("%d bound rows after rekey", n)
	}
	if out := cli(t, e.vars, "doctor").stdout; strings.Contains(out, "token binding") || !strings.Contains(out, "bot and app tokens accepted") {
		t.Errorf("after rekey:\n%s", out)
	}
}
