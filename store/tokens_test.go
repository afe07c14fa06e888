package store_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/testenv"
	"github.com/konstruct/konstruct/secret"
)

// Whoever can write the database cannot move one workspace's token into
// another workspace's row, nor one column's into the other: each
// ciphertext is bound to its row and column.
func TestTokenCopiedToAnotherRowDoesNotDecrypt(t *testing.T) {
	t.Parallel()
	for name, swap := range map[string]string{
		"another workspace's token": `UPDATE workspaces SET bot_token_enc = (SELECT bot_token_enc FROM workspaces WHERE team_id = 'TACME'),
			key_id = (SELECT key_id FROM workspaces WHERE team_id = 'TACME') WHERE team_id = 'TEVIL'`,
		"the app token as the bot token": `UPDATE workspaces SET bot_token_enc = app_token_enc WHERE team_id = 'TACME'`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			st, pg := testenv.NewStore(t)
			acme, _ := st.CreateTenant(ctx, "Acme", "")
			evil, _ := st.CreateTenant(ctx, "Evil", "")
			for _, w := range []konstruct.Workspace{
				{TenantID: acme.ID, TeamID: "TACME", AppToken: "xapp-acme", BotToken: "xoxb-acme"},
				{TenantID: evil.ID, TeamID: "TEVIL", AppToken: "xapp-evil", BotToken: "xoxb-evil"},
			} {
				if _, err := st.AddWorkspace(ctx, w); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := openPool(t, pg.AdminURL).Exec(ctx, swap); err != nil {
				t.Fatal(err)
			}
			// The altered row is listed with its problem and no token; the
			// other is served.
			ws, err := st.ActiveWorkspaces(ctx)
			if err != nil {
				t.Fatal(err)
			}
			problems := 0
			for _, w := range ws {
				if w.Problem != "" {
					problems++
					if !strings.Contains(w.Problem, "another workspace") || w.BotToken != "" || w.AppToken != "" {
						t.Errorf("workspace %s: problem %q, tokens %q %q", w.TeamID, w.Problem, w.AppToken, w.BotToken)
					}
					continue
				}
				if w.BotToken != "xoxb-"+strings.ToLower(w.TeamID[1:]) {
					t.Fatalf("workspace %s got the bot token %q", w.TeamID, w.BotToken)
				}
			}
			if len(ws) != 2 || problems != 1 {
				t.Errorf("ActiveWorkspaces = %+v, want two, one with a problem", ws)
			}
		})
	}
}

// Rows sealed before tokens were bound to their row still decrypt, and
// `workspace rekey` binds them, under the same key.
func TestRekeyBindsUnboundTokens(t *testing.T) {
	t.Parallel()
	pg := testenv.NewPG(t)
	ctx := context.Background()
	key := testenv.SecretKey()
	box, _ := secret.NewBox(key)
	st := testenv.OpenStore(t, pg.RuntimeURL, box)
	ten, _ := st.CreateTenant(ctx, "Acme", "")
	if _, err := st.AddWorkspace(ctx, konstruct.Workspace{TenantID: ten.ID, TeamID: "T1", AppToken: "xapp-old", BotToken: "xoxb-old"}); err != nil {
		t.Fatal(err)
	}
	// The row as the previous release wrote it: no associated data, a bare key id.
	admin := openPool(t, pg.AdminURL)
	if _, err := admin.Exec(ctx, `UPDATE workspaces SET app_token_enc = $1, bot_token_enc = $2, key_id = $3 WHERE team_id = 'T1'`,
		sealUnbound(t, key, "xapp-old"), sealUnbound(t, key, "xoxb-old"), box.CurrentKeyID()); err != nil {
		t.Fatal(err)
	}
	ws, err := st.ActiveWorkspaces(ctx)
	if err != nil || len(ws) != 1 || ws[0].BotToken != "xoxb-old" || ws[0].AppToken != "xapp-old" {
		t.Fatalf("an unbound row before rekey: %+v, %v", ws, err)
	}
	if teams, err := st.UnboundTokens(ctx); err != nil || len(teams) != 1 || teams[0] != "T1" {
		t.Fatalf("UnboundTokens before rekey = %q, %v", teams, err)
	}
	if n, err := st.RekeyWorkspaces(ctx); err != nil || n != 1 {
		t.Fatalf("rekey = %d, %v; want the unbound row re-sealed", n, err)
	}
	var ref string
	if err := admin.QueryRow(ctx, `SELECT key_id FROM workspaces WHERE team_id = 'T1'`).Scan(&ref); err != nil {
		t.Fatal(err)
	}
	if ref != box.CurrentKeyRef() {
		t.Fatalf("key_id after rekey = %q, want %q", ref, box.CurrentKeyRef())
	}
	if ws, err := st.ActiveWorkspaces(ctx); err != nil || ws[0].BotToken != "xoxb-old" {
		t.Fatalf("after rekey: %+v, %v", ws, err)
	}
	if n, err := st.RekeyWorkspaces(ctx); err != nil || n != 0 {
		t.Fatalf("second rekey = %d, %v", n, err)
	}
	if teams, err := st.UnboundTokens(ctx); err != nil || len(teams) != 0 {
		t.Fatalf("UnboundTokens after rekey = %q, %v", teams, err)
	}
}

// sealUnbound seals as secret did before associated data.
func sealUnbound(t *testing.T, key, plaintext string) []byte {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, gcm.NonceSize())
	_, _ = rand.Read(nonce)
	return gcm.Seal(nonce, nonce, []byte(plaintext), nil)
}
