// Package spool keeps the gateway's intake durable while Redis does not
// answer: the records of envelopes about to be acked go to a local,
// size-bounded log on disk (bbolt, fsync'd once per group commit) and are
// replayed into Redis, oldest first, when it answers again (Recorder).
//
// Place in the flow: bot (read, normalize) → Recorder.Record → Redis
// stream (queue) or, within a short deadline failing that, the spool → ack.
// The router reads the records from Redis only; the spool's job ends when
// a record is in Redis.
package spool

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/konstruct/konstruct"
)

// FileName is the spool's file under the state directory.
const FileName = "intake.spool"

var bucket = []byte("records")

// ErrFull is returned by Append when the spool holds its maximum.
var ErrFull = errors.New("the intake spool is full")

// Spool is an ordered, durable log of records on disk. Safe for concurrent
// use.
type Spool struct {
	db       *bolt.DB
	maxBytes int64

	mu    sync.Mutex
	n     int   // records held
	bytes int64 // their size
}

// Options bound a Spool.
type Options struct {
	// MaxBytes bounds the records held (default 256 MiB): past it, Append
	// refuses, and the gateway leaves envelopes unacked for Slack to
	// redeliver.
	MaxBytes int64
}

// Open opens (creating it and its directory) the spool in dir.
func Open(dir string, o Options) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open spool %s: %w", path, err)
	}
	s := &Spool{db: db, maxBytes: cmp.Or(o.MaxBytes, 256<<20)}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(_, v []byte) error {
			s.n++
			s.bytes += int64(len(v))
			return nil
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("read spool %s: %w", path, err)
	}
	return s, nil
}

// Close closes the file.
func (s *Spool) Close() error { return s.db.Close() }

// Len is how many records the spool holds.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Append adds records at the end, in one fsync'd transaction.
func (s *Spool) Append(records [][]byte) error {
	var size int64
	for _, r := range records {
		size += int64(len(r))
	}
	s.mu.Lock()
	full := s.bytes+size > s.maxBytes
	s.mu.Unlock()
	if full {
		return ErrFull
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, r := range records {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(key(seq), r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "The intake spool could not be written.", Err: err}
	}
	s.mu.Lock()
	s.n += len(records)
	s.bytes += size
	s.mu.Unlock()
	return nil
}

// Entry is one spooled record.
type Entry struct {
	Seq  uint64
	Data []byte
}

// Oldest returns up to n records, oldest first.
func (s *Spool) Oldest(n int) ([]Entry, error) {
	var out []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			out = append(out, Entry{Seq: binary.BigEndian.Uint64(k), Data: append([]byte(nil), v...)})
		}
		return nil
	})
	return out, err
}

// Delete removes records (replayed into Redis).
func (s *Spool) Delete(entries []Entry) error {
	var size int64
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, e := range entries {
			if v := b.Get(key(e.Seq)); v != nil {
				size += int64(len(v))
				n++
				if err := b.Delete(key(e.Seq)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete from spool: %w", err)
	}
	s.mu.Lock()
	s.n -= n
	s.bytes -= size
	s.mu.Unlock()
	return nil
}

func key(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}
