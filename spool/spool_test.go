package spool_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/konstruct/konstruct/spool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func openSpool(t *testing.T, dir string, o spool.Options) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	return sp
}

func records(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%03d", prefix, i)
	}
	return out
}

func data(es []spool.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e.Data)
	}
	return out
}

func strs(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}

func TestSpoolKeepsAppendOrderAcrossBatches(t *testing.T) {
	t.Parallel()
	sp := openSpool(t, t.TempDir(), spool.Options{})
	var want []string
	for b := range 5 {
		batch := records(fmt.Sprintf("b%d", b), 3+b)
		if err := sp.Append(batch); err != nil {
			t.Fatal(err)
		}
		want = append(want, strs(batch)...)
	}
	if sp.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", sp.Len(), len(want))
	}
	got, err := sp.Oldest(len(want) + 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(data(got), want) {
		t.Fatalf("Oldest = %v\nwant      %v", data(got), want)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("sequence numbers not increasing: %d after %d", got[i].Seq, got[i-1].Seq)
		}
	}
	// Oldest(n) is a prefix.
	head, err := sp.Oldest(4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(data(head), want[:4]) {
		t.Fatalf("Oldest(4) = %v, want %v", data(head), want[:4])
	}
}

func TestSpoolDeleteRemovesOnlyThoseEntries(t *testing.T) {
	t.Parallel()
	sp := openSpool(t, t.TempDir(), spool.Options{})
	all := records("r", 10)
	if err := sp.Append(all); err != nil {
		t.Fatal(err)
	}
	head, err := sp.Oldest(4)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Delete(head); err != nil {
		t.Fatal(err)
	}
	if sp.Len() != 6 {
		t.Fatalf("Len after deleting 4 of 10 = %d, want 6", sp.Len())
	}
	// Deleting the same entries again (a replay whose delete is retried)
	// changes nothing.
	if err := sp.Delete(head); err != nil {
		t.Fatal(err)
	}
	if sp.Len() != 6 {
		t.Fatalf("Len after deleting the same entries twice = %d, want 6", sp.Len())
	}
	rest, err := sp.Oldest(100)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(data(rest), strs(all[4:])) {
		t.Fatalf("after delete: %v, want %v", data(rest), strs(all[4:]))
	}
	if err := sp.Delete(rest); err != nil {
		t.Fatal(err)
	}
	if sp.Len() != 0 {
		t.Fatalf("Len = %d, want 0", sp.Len())
	}
	if es, err := sp.Oldest(10); err != nil || len(es) != 0 {
		t.Fatalf("Oldest on an empty spool = %v, %v", es, err)
	}
}

func TestSpoolFullRefusesTheWholeBatch(t *testing.T) {
	t.Parallel()
	// 10-byte records; room for 5.
	sp := openSpool(t, t.TempDir(), spool.Options{MaxBytes: 50})
	rec := func(i int) []byte { return fmt.Appendf(nil, "record-%03d", i) }
	for i := range 4 {
		if err := sp.Append([][]byte{rec(i)}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	// A batch that does not fit is refused whole: no partial record.
	err := sp.Append([][]byte{rec(4), rec(5)})
	if !errors.Is(err, spool.ErrFull) {
		t.Fatalf("append past MaxBytes: err = %v, want ErrFull", err)
	}
	if sp.Len() != 4 {
		t.Fatalf("Len after a refused batch = %d, want 4", sp.Len())
	}
	if err := sp.Append([][]byte{rec(4)}); err != nil {
		t.Fatalf("append up to MaxBytes exactly: %v", err)
	}
	if err := sp.Append([][]byte{rec(5)}); !errors.Is(err, spool.ErrFull) {
		t.Fatalf("append to a full spool: err = %v, want ErrFull", err)
	}
	// Replayed records make room again.
	head, _ := sp.Oldest(2)
	if err := sp.Delete(head); err != nil {
		t.Fatal(err)
	}
	if err := sp.Append([][]byte{rec(5), rec(6)}); err != nil {
		t.Fatalf("append after delete: %v", err)
	}
	got, _ := sp.Oldest(100)
	want := []string{"record-002", "record-003", "record-004", "record-005", "record-006"}
	if !slices.Equal(data(got), want) {
		t.Fatalf("spool = %v, want %v", data(got), want)
	}
}

func TestSpoolReopenKeepsRecordsAndOrder(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state", "nested") // Open creates it
	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	first := records("before", 7)
	if err := sp.Append(first); err != nil {
		t.Fatal(err)
	}
	head, _ := sp.Oldest(2)
	if err := sp.Delete(head); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, spool.FileName)); err != nil {
		t.Fatalf("spool file: %v", err)
	}

	sp = openSpool(t, dir, spool.Options{})
	if sp.Len() != 5 {
		t.Fatalf("Len after reopen = %d, want 5", sp.Len())
	}
	second := records("after", 3)
	if err := sp.Append(second); err != nil {
		t.Fatal(err)
	}
	got, err := sp.Oldest(100)
	if err != nil {
		t.Fatal(err)
	}
	want := append(strs(first[2:]), strs(second)...)
	if !slices.Equal(data(got), want) {
		t.Fatalf("after reopen: %v\nwant %v", data(got), want)
	}
}

func TestSpoolReopenCountsBytesTowardsTheBound(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{MaxBytes: 30})
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Append([][]byte{[]byte("0123456789"), []byte("0123456789")}); err != nil {
		t.Fatal(err)
	}
	_ = sp.Close()
	sp = openSpool(t, dir, spool.Options{MaxBytes: 30})
	if err := sp.Append([][]byte{[]byte("0123456789"), []byte("x")}); !errors.Is(err, spool.ErrFull) {
		t.Fatalf("append past the bound after reopen: err = %v, want ErrFull", err)
	}
}

func TestSpoolOpenFailsOnAnUnwritableDirectory(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := spool.Open(filepath.Join(file, "state"), spool.Options{}); err == nil {
		t.Fatal("Open under a regular file succeeded")
	}
}
