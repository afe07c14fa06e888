package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/store"
)

func rowMatches(t *testing.T, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)` + p).MatchString(out) {
			t.Errorf("doctor output does not match %s:\n%s", p, out)
		}
	}
}

// TestDoctorBeforeMigrate: on a database nobody migrated yet, doctor says
// so and what to run, and does not blame the secret key.
func TestDoctorBeforeMigrate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := store.Provision(ctx, testenv.PGAdminURL(), "kt_nomig_"+randomHex(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Drop(context.Background()) })
	r := cli(t, e.with("KONSTRUCT_DATABASE_URL", db.RuntimeURL, "KONSTRUCT_DATABASE_MIGRATE_URL", db.OwnerURL), "doctor")
	if r.err == nil {
		t.Fatalf("doctor passed on an unmigrated database:\n%s", r.stdout)
	}
	rowMatches(t, r.stdout,
		`^migrations\s+FAIL\s+the database is not migrated`,
		`→ fix: run .konstruct migrate.`,
		`^workspaces\s+SKIP\s+checked once the database is migrated`)
	if strings.Contains(r.stdout, "secret_key") {
		t.Errorf("doctor blames the secret key before migrate:\n%s", r.stdout)
	}
}

// TestDoctorCatchesAnotherSecretKey: tokens stored under one key, doctor
// run with another (what a `$(openssl rand …)` in the env file does) fails
// the workspaces with the fix: write the key's value once.
func TestDoctorCatchesAnotherSecretKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	e.seed("keys")
	r := cli(t, e.with("KONSTRUCT_SECRET_KEY", testenv.SecretKey()), "doctor")
	if r.err == nil {
		t.Fatalf("doctor passed with another secret key:\n%s", r.stdout)
	}
	rowMatches(t, r.stdout,
		`^workspace \S+\s+FAIL\s+cannot decrypt the tokens of workspace \S+: .*the daemon skips it and serves the others`,
		`→ fix: secret_key must be the key the tokens were stored with\. Write that key's value in the env file, not a command`,
		`If the key is lost, .konstruct workspace add. each workspace again`)
}

// TestDoctorEnvFileAndUnknownKeys: --env-file reads the service's
// EnvironmentFile as systemd does (a $(…) is a literal, reported as such),
// and unknown keys of the config file are warnings, as in other commands.
func TestDoctorEnvFileAndUnknownKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "konstruct.yaml")
	if err := os.WriteFile(cfgPath, []byte("llm:\n  modle: llama3\nworker:\n  concurrency: 4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := filepath.Join(dir, "konstruct.env")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(env, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The database and the key only in the file; the shell has the rest.
	vars := e.with("KONSTRUCT_DATABASE_URL", "", "KONSTRUCT_SECRET_KEY", "")
	write("# secrets\nKONSTRUCT_SECRET_KEY=$(openssl rand -base64 32)\nKONSTRUCT_DATABASE_URL=\"" + e.pg.RuntimeURL + "\"\n")
	r := cli(t, vars, "doctor", "--config", cfgPath, "--env-file", env)
	rowMatches(t, r.stdout,
		`^env file\s+PASS\s+.*konstruct\.env: 2 variables`,
		`^env file\s+FAIL\s+KONSTRUCT_SECRET_KEY is a shell command`,
		`^config\s+FAIL\s+.*secret_key`,
		`secret_key holds a shell command, which nothing runs`,
		`^config\s+WARN\s+unknown key llm\.modle in `+regexp.QuoteMeta(cfgPath),
		`^database\s+PASS`)

	write("KONSTRUCT_SECRET_KEY='" + e.key + "'\nKONSTRUCT_DATABASE_URL=" + e.pg.RuntimeURL + "\n")
	r = cli(t, vars, "doctor", "--config", cfgPath, "--env-file", env)
	rowMatches(t, r.stdout, `^config\s+PASS`, `^config\s+WARN\s+unknown key llm\.modle`, `^database\s+PASS`, `^migrations\s+PASS`, `^workspaces\s+PASS`)
	if strings.Contains(r.stdout, "env file  FAIL") {
		t.Errorf("a quoted key was reported:\n%s", r.stdout)
	}

	r = cli(t, vars, "doctor", "--env-file", filepath.Join(dir, "missing.env"))
	if r.err == nil || !regexp.MustCompile(`(?m)^env file\s+FAIL`).MatchString(r.stdout) {
		t.Errorf("doctor with a missing env file: %q\n%s", r.line(), r.stdout)
	}
}

func TestReadEnvFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, body string
		want       map[string]string
		commands   []string
		invalid    int
	}{
		{name: "forms", body: "# c\n; c\n\nA=1\n B = two words \nC=\"quoted # not a comment\"\nD='single'\nE=\nF=a\\\nb\n",
			want: map[string]string{"A": "1", "B": "two words", "C": "quoted # not a comment", "D": "single", "E": "", "F": "ab"}},
		{name: "commands", body: "K=$(openssl rand -base64 32)\nL=`date`\nM=$HOME\n",
			want: map[string]string{"K": "$(openssl rand -base64 32)", "L": "`date`", "M": "$HOME"}, commands: []string{"K", "L"}},
		{name: "malformed", body: "export KONSTRUCT_SECRET_KEY=abcdefghijkl\nword\nA=1\n", want: map[string]string{"A": "1"}, invalid: 2},
	} {
		path := filepath.Join(dir, tc.name)
		if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		ef, err := readEnvFile(path)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(ef.Vars) != len(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, ef.Vars, tc.want)
		}
		for k, v := range tc.want {
			if ef.Vars[k] != v {
				t.Errorf("%s: %s = %q, want %q", tc.name, k, ef.Vars[k], v)
			}
		}
		if len(ef.Invalid) != tc.invalid || strings.Contains(strings.Join(ef.Invalid, " "), "abcdefghijkl") {
			t.Errorf("%s: invalid lines %q, want %d, without values", tc.name, ef.Invalid, tc.invalid)
		}
		if strings.Join(ef.Commands, ",") != strings.Join(tc.commands, ",") {
			t.Errorf("%s: commands %v, want %v", tc.name, ef.Commands, tc.commands)
		}
	}
}
