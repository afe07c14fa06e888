package secret_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/konstruct/konstruct/secret"
)

const token = "xoxb-1234-5678-abcdefSECRET"

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	b, err := secret.NewBox(secret.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	ct, id, err := b.Seal([]byte(token), aad)
	if err != nil {
		t.Fatal(err)
	}
	if id != "v2:"+b.CurrentKeyID() || id != b.CurrentKeyRef() || len(b.CurrentKeyID()) != 8 {
		t.Fatalf("key ref %q, current key id %q", id, b.CurrentKeyID())
	}
	if bytes.Contains(ct, []byte(token)) || bytes.Contains(ct, []byte("SECRET")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	ct2, _, _ := b.Seal([]byte(token), aad)
	if bytes.Equal(ct, ct2) {
		t.Fatal("two seals of one plaintext are equal: nonce reused")
	}
	got, err := b.Open(ct, id, aad)
	if err != nil || string(got) != token {
		t.Fatalf("Open = %q, %v", got, err)
	}
}

var aad = []byte("workspaces/tenant-a/T1/bot_token")

func TestKeyID(t *testing.T) {
	t.Parallel()
	raw := bytes.Repeat([]byte{7}, 32)
	b, err := secret.NewBox(base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		t.Fatal(err)
	}
	if b.CurrentKeyID() != secret.KeyID(raw) {
		t.Fatalf("%q != %q", b.CurrentKeyID(), secret.KeyID(raw))
	}
}

func TestBadKeys(t *testing.T) {
	t.Parallel()
	for name, key := range map[string]string{
		"empty":     "",
		"not b64":   "not base64 at all!",
		"16 bytes":  base64.StdEncoding.EncodeToString(make([]byte, 16)),
		"33 bytes":  base64.StdEncoding.EncodeToString(make([]byte, 33)),
		"plaintext": "0123456789abcdef0123456789abcdef",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := secret.NewBox(key)
			if err == nil || !strings.Contains(err.Error(), "secret_key must be base64 of 32 bytes") {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if _, err := secret.NewBox(secret.NewKey(), "short"); err == nil || !strings.Contains(err.Error(), "previous secret key #1") {
		t.Fatalf("previous: err = %v", err)
	}
}

func TestWrongKeyAndTamper(t *testing.T) {
	t.Parallel()
	a, _ := secret.NewBox(secret.NewKey())
	other, _ := secret.NewBox(secret.NewKey())
	ct, id, _ := a.Seal([]byte(token), aad)

	_, err := other.Open(ct, id, aad)
	if !errors.Is(err, secret.ErrUnknownKey) || !strings.Contains(err.Error(), a.CurrentKeyID()) {
		t.Fatalf("unknown key: err = %v", err)
	}
	if strings.Contains(err.Error(), "xoxb") {
		t.Fatal("error leaks the token")
	}

	// Same id, different bytes: claim other's id to force an auth failure.
	_, err = other.Open(ct, other.CurrentKeyRef(), aad)
	if !errors.Is(err, secret.ErrDecrypt) {
		t.Fatalf("wrong key: err = %v", err)
	}

	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		if _, err := a.Open(bad, id, aad); !errors.Is(err, secret.ErrDecrypt) {
			t.Fatalf("tampered byte %d: err = %v", i, err)
		}
	}
	if _, err := a.Open(ct[:5], id, aad); !errors.Is(err, secret.ErrDecrypt) {
		t.Fatalf("truncated: err = %v", err)
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := secret.NewKey(), secret.NewKey()
	old, _ := secret.NewBox(oldKey)
	ct, oldID, _ := old.Seal([]byte(token), aad)

	rotated, err := secret.NewBox(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.CurrentKeyRef() == oldID {
		t.Fatal("current key id should be the new key's")
	}
	plain, err := rotated.Open(ct, oldID, aad)
	if err != nil || string(plain) != token {
		t.Fatalf("open with previous key: %q, %v", plain, err)
	}
	ct2, id2, _ := rotated.Seal(plain, aad)
	if id2 != rotated.CurrentKeyRef() {
		t.Fatal("re-seal not under the current key")
	}
	fresh, _ := secret.NewBox(newKey)
	if got, err := fresh.Open(ct2, id2, aad); err != nil || string(got) != token {
		t.Fatalf("after rotation: %q, %v", got, err)
	}
}

// A ciphertext opens only with the associated data it was sealed with: a
// token moved to another workspace's row (or column) does not decrypt.
func TestBoundToAssociatedData(t *testing.T) {
	t.Parallel()
	b, _ := secret.NewBox(secret.NewKey())
	ct, ref, _ := b.Seal([]byte(token), aad)
	for _, other := range [][]byte{nil, []byte("workspaces/tenant-b/T2/bot_token"), []byte("workspaces/tenant-a/T1/app_token")} {
		if _, err := b.Open(ct, ref, other); !errors.Is(err, secret.ErrDecrypt) {
			t.Errorf("opened with associated data %q: err = %v", other, err)
		}
	}
	// Claiming the ciphertext is an unbound one does not get around it.
	if _, err := b.Open(ct, b.CurrentKeyID(), nil); !errors.Is(err, secret.ErrDecrypt) {
		t.Errorf("opened as an unbound ciphertext: err = %v", err)
	}
}

// A ciphertext sealed before binding (stored with a bare key id) still
// opens, whatever associated data the caller passes, until it is re-sealed.
func TestUnboundCiphertextStillOpens(t *testing.T) {
	t.Parallel()
	key := secret.NewKey()
	b, _ := secret.NewBox(key)
	legacy := sealUnbound(t, key, token)
	got, err := b.Open(legacy, b.CurrentKeyID(), aad)
	if err != nil || string(got) != token {
		t.Fatalf("unbound ciphertext: %q, %v", got, err)
	}
	if id, bound := secret.ParseKeyRef(b.CurrentKeyID()); bound || id != b.CurrentKeyID() {
		t.Errorf("ParseKeyRef(bare id) = %q, %v", id, bound)
	}
	if id, bound := secret.ParseKeyRef(b.CurrentKeyRef()); !bound || id != b.CurrentKeyID() {
		t.Errorf("ParseKeyRef(current ref) = %q, %v", id, bound)
	}
}

// sealUnbound seals as the package did before associated data: AES-256-GCM,
// nonce||ciphertext, no associated data.
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
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	return gcm.Seal(nonce, nonce, []byte(plaintext), nil)
}
