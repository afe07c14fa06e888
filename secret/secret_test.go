package secret_test

import (
	"bytes"
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
	ct, id, err := b.Seal([]byte(token))
	if err != nil {
		t.Fatal(err)
	}
	if id != b.CurrentKeyID() || len(id) != 8 {
		t.Fatalf("key id %q, current %q", id, b.CurrentKeyID())
	}
	if bytes.Contains(ct, []byte(token)) || bytes.Contains(ct, []byte("SECRET")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	ct2, _, _ := b.Seal([]byte(token))
	if bytes.Equal(ct, ct2) {
		t.Fatal("two seals of one plaintext are equal: nonce reused")
	}
	got, err := b.Open(ct, id)
	if err != nil || string(got) != token {
		t.Fatalf("Open = %q, %v", got, err)
	}
}

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
	ct, id, _ := a.Seal([]byte(token))

	_, err := other.Open(ct, id)
	if !errors.Is(err, secret.ErrUnknownKey) || !strings.Contains(err.Error(), id) {
		t.Fatalf("unknown key: err = %v", err)
	}
	if strings.Contains(err.Error(), "xoxb") {
		t.Fatal("error leaks the token")
	}

	// Same id, different bytes: claim other's id to force an auth failure.
	_, err = other.Open(ct, other.CurrentKeyID())
	if !errors.Is(err, secret.ErrDecrypt) {
		t.Fatalf("wrong key: err = %v", err)
	}

	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		if _, err := a.Open(bad, id); !errors.Is(err, secret.ErrDecrypt) {
			t.Fatalf("tampered byte %d: err = %v", i, err)
		}
	}
	if _, err := a.Open(ct[:5], id); !errors.Is(err, secret.ErrDecrypt) {
		t.Fatalf("truncated: err = %v", err)
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := secret.NewKey(), secret.NewKey()
	old, _ := secret.NewBox(oldKey)
	ct, oldID, _ := old.Seal([]byte(token))

	rotated, err := secret.NewBox(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.CurrentKeyID() == oldID {
		t.Fatal("current key id should be the new key's")
	}
	plain, err := rotated.Open(ct, oldID)
	if err != nil || string(plain) != token {
		t.Fatalf("open with previous key: %q, %v", plain, err)
	}
	ct2, id2, _ := rotated.Seal(plain)
	if id2 != rotated.CurrentKeyID() {
		t.Fatal("re-seal not under the current key")
	}
	fresh, _ := secret.NewBox(newKey)
	if got, err := fresh.Open(ct2, id2); err != nil || string(got) != token {
		t.Fatalf("after rotation: %q, %v", got, err)
	}
}
