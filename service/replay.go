package service

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"
)

// MemoryReplayStore is the default ReplayStore: the jti of proofs seen by
// this process, each until it expires on the engine's clock, at most
// maxEntries at a time. Expired entries are dropped before a new one is
// refused; when every entry is still live, Remember refuses (an error: the
// proof is not accepted) rather than forget a proof that could be replayed.
// Safe for concurrent use: of concurrent calls with one key, exactly one is
// told it is fresh.
type MemoryReplayStore struct {
	now func() time.Time

	mu       sync.Mutex
	max      int
	seen     map[string]int64 // key → expiry, Unix nanoseconds
	byExpiry expiryHeap       // the same entries, soonest expiry first
}

// NewMemoryReplayStore is an empty store of at most maxEntries live
// entries (at least 1), read against now (time.Now when nil).
func NewMemoryReplayStore(maxEntries int, now func() time.Time) *MemoryReplayStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryReplayStore{now: now, max: max(maxEntries, 1), seen: map[string]int64{}}
}

// Remember records key until expires and reports whether it was new. A key
// whose expiry has passed already is new and not kept: nothing could be
// accepted with it any more.
func (m *MemoryReplayStore) Remember(_ context.Context, key string, expires time.Time) (bool, error) {
	now := m.now().UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evict(now)
	if _, ok := m.seen[key]; ok {
		return false, nil
	}
	exp := expires.UnixNano()
	if exp <= now {
		return true, nil
	}
	if len(m.seen) >= m.max {
		return false, fmt.Errorf("the in-memory DPoP replay cache holds %d proofs still inside their iat window, its bound (dpop.replay_max_entries): it refuses new proofs rather than forget one that could be replayed; raise replay_max_entries, shorten dpop.iat_window, or share a replay_store", m.max)
	}
	m.seen[key] = exp
	heap.Push(&m.byExpiry, replayEntry{key: key, expires: exp})
	return true, nil
}

// Len is the number of entries held, expired ones included until the next
// Remember drops them.
func (m *MemoryReplayStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seen)
}

// setMax changes the bound (a configuration reload); entries beyond it stay
// until they expire, and new ones are refused until then.
func (m *MemoryReplayStore) setMax(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.max = max(n, 1)
}

// evict drops every entry whose expiry is at or before now: each entry is
// in the heap once, so this is O(log n) per dropped entry.
func (m *MemoryReplayStore) evict(now int64) {
	for len(m.byExpiry) > 0 && m.byExpiry[0].expires <= now {
		e := heap.Pop(&m.byExpiry).(replayEntry)
		delete(m.seen, e.key)
	}
}

type replayEntry struct {
	key     string
	expires int64
}

// expiryHeap is a min-heap of entries by expiry (container/heap).
type expiryHeap []replayEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires < h[j].expires }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = replayEntry{}
	*h = old[:len(old)-1]
	return e
}
