// Package secret encrypts Slack tokens at rest with AES-256-GCM under
// secret_key. Each ciphertext is stored with a reference to the key that
// sealed it, so the key can be rotated: list the old key as a previous key,
// and store.RekeyWorkspaces re-seals everything under the current one.
//
// A ciphertext is bound to where it belongs by AES-GCM associated data (the
// store passes the row's tenant and team id and the column): whoever can
// write the database cannot move one workspace's token to another's row, nor
// an app token in place of a bot token, without the open failing. The key
// reference tells the two formats apart: "v2:<key id>" for a bound
// ciphertext, a bare "<key id>" for one sealed before binding existed, which
// opens without associated data until it is re-sealed (workspace rekey).
//
// Errors never contain plaintext, ciphertext or key material.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors, wrapped with the key id involved.
var (
	ErrUnknownKey = errors.New("unknown secret key")
	ErrDecrypt    = errors.New("decryption failed: the ciphertext was altered or sealed with another key")
)

// Box seals with its current key and opens with the current or any
// previous key. It is safe for concurrent use.
type Box struct {
	current string
	aeads   map[string]cipher.AEAD
}

// NewBox builds a Box from base64 keys of exactly 32 bytes: current seals
// and opens; previous keys only open (during a rotation).
func NewBox(current string, previous ...string) (*Box, error) {
	b := &Box{aeads: make(map[string]cipher.AEAD, 1+len(previous))}
	id, aead, err := parseKey(current)
	if err != nil {
		return nil, fmt.Errorf("secret_key must be base64 of 32 bytes (generate one with `openssl rand -base64 32`): %w", err)
	}
	b.current = id
	b.aeads[id] = aead
	for i, k := range previous {
		id, aead, err := parseKey(k)
		if err != nil {
			return nil, fmt.Errorf("previous secret key #%d must be base64 of 32 bytes: %w", i+1, err)
		}
		if _, dup := b.aeads[id]; !dup {
			b.aeads[id] = aead
		}
	}
	return b, nil
}

func parseKey(s string) (string, cipher.AEAD, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil, errors.New("empty")
	}
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil {
		return "", nil, errors.New("not valid base64")
	}
	if len(raw) != 32 {
		return "", nil, fmt.Errorf("decodes to %d bytes", len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return "", nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return "", nil, err
	}
	return KeyID(raw), aead, nil
}

// KeyID names a raw key: the first 8 hex characters of its SHA-256. It is
// stored beside each ciphertext and safe to print.
func KeyID(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:4])
}

// CurrentKeyID is the id of the key Seal uses.
func (b *Box) CurrentKeyID() string { return b.current }

// boundPrefix marks the key reference of a ciphertext bound to its
// associated data.
const boundPrefix = "v2:"

// CurrentKeyRef is the key reference Seal returns now: a ciphertext stored
// with any other needs re-sealing (a previous key, or no binding).
func (b *Box) CurrentKeyRef() string { return boundPrefix + b.current }

// ParseKeyRef splits a stored key reference into the key id and whether
// the ciphertext is bound to associated data.
func ParseKeyRef(ref string) (keyID string, bound bool) {
	if id, ok := strings.CutPrefix(ref, boundPrefix); ok {
		return id, true
	}
	return ref, false
}

// Seal encrypts plaintext under the current key with a fresh random nonce,
// bound to aad (which Open must be given again), and returns
// nonce||ciphertext and the key reference to store beside it.
func (b *Box) Seal(plaintext, aad []byte) ([]byte, string, error) {
	aead := b.aeads[b.current]
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, "", fmt.Errorf("nonce: %w", err)
	}
	return aead.Seal(out, out, plaintext, aad), b.CurrentKeyRef(), nil
}

// Open decrypts what Seal returned, given the same aad; a ciphertext whose
// reference is a bare key id (sealed before binding) is opened without.
func (b *Box) Open(ciphertext []byte, keyRef string, aad []byte) ([]byte, error) {
	keyID, bound := ParseKeyRef(keyRef)
	aead, ok := b.aeads[keyID]
	if !ok {
		return nil, fmt.Errorf("%w %q: list the key that sealed it in secret_key_previous (current key is %q)", ErrUnknownKey, keyID, b.current)
	}
	if !bound {
		aad = nil
	}
	n := aead.NonceSize()
	if len(ciphertext) < n+aead.Overhead() {
		return nil, fmt.Errorf("key %q: %w", keyID, ErrDecrypt)
	}
	plain, err := aead.Open(nil, ciphertext[:n], ciphertext[n:], aad)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", keyID, ErrDecrypt)
	}
	return plain, nil
}

// NewKey returns a random key, base64 of 32 bytes, fit for secret_key.
func NewKey() string {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails on supported platforms
	return base64.StdEncoding.EncodeToString(raw)
}
