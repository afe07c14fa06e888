//go:build !linux

package store

import "time"

// setUserTimeout: TCP_USER_TIMEOUT is Linux's; elsewhere the keepalives
// alone find a vanished peer (failover.go).
func setUserTimeout(int, time.Duration) error { return nil }
