package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
)

// The providers an agent may use are stored with it, in order, once each.
func TestAgentProviders(t *testing.T) {
	t.Parallel()
	st, _ := testenv.NewStore(t)
	ctx := context.Background()
	ten, err := st.CreateTenant(ctx, "OnPrem", "")
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.CreateTenant(ctx, "Cloudy", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetAgent(ctx, konstruct.Agent{TenantID: ten.ID, Name: "Mara", Providers: []string{"local", " local ", "backup"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetAgent(ctx, konstruct.Agent{TenantID: other.ID, Name: "Max"}); err != nil {
		t.Fatal(err)
	}
	got, err := st.ActiveAgent(ctx, ten.ID)
	if err != nil || !slices.Equal(got.Providers, []string{"local", "backup"}) {
		t.Fatalf("providers = %q, %v; want [local backup]", got.Providers, err)
	}
	if o, err := st.ActiveAgent(ctx, other.ID); err != nil || len(o.Providers) != 0 {
		t.Fatalf("an agent set without providers has %q, %v", o.Providers, err)
	}
	// Setting the agent again without providers lifts the restriction.
	if _, err := st.SetAgent(ctx, konstruct.Agent{TenantID: ten.ID, Name: "Mara"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.ActiveAgent(ctx, ten.ID); len(got.Providers) != 0 {
		t.Fatalf("providers = %q after a set without any", got.Providers)
	}
	_, err = st.SetAgent(ctx, konstruct.Agent{TenantID: ten.ID, Name: "Mara", Providers: []string{"local", ""}})
	code(t, err, konstruct.EINVALID)
}
