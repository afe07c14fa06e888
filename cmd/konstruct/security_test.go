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
