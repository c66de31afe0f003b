// Package testkit is what usher's tests share: a bounded context, a clock
// the test moves, signing keys and tokens signed with them, DPoP proofs, a
// JWKS issuer on loopback whose answers the test controls, the dev-issuer
// engine fixture (a real engine, optionally behind a real gRPC listener on
// 127.0.0.1) and a log sink safe for concurrent writes. It is imported by
// tests only.
package testkit

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
)

// Now is the time tokens made by Claims are issued around, and where a
// Clock from NewClock starts.
var Now = time.Unix(1_760_000_000, 0).UTC()

// Context bounds a test: it ends with the test or after 30 s.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Clock is a clock the test sets and moves; pass its Now to
// service.WithClock. Safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock at Now.
func NewClock() *Clock { return &Clock{now: Now} }

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set puts the clock at t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// SyncBuffer is a log sink safe for concurrent writes.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Eventually calls cond every 10 ms until it is true; the test fails when ctx
// ends first. For conditions another goroutine makes true (a fetch in the
// background), not for waiting until time has passed.
func Eventually(ctx context.Context, t testing.TB, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached before the deadline", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
