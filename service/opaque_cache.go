package service

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// answerKey is an opaque token's SHA-256 and the issuer it was routed to:
// the cache holds no token.
type answerKey struct {
	sum [sha256.Size]byte
	ik  *issuerKeys
}

// answerCache remembers introspection answers: an active one for at most
// cache_ttl and never past the token's exp, an inactive one for at most
// negative_cache_ttl, a failure never. It keeps what the issuer said, not a
// verdict: the time, audience and scope checks run on every lookup, so a
// cached answer gives the same verdict as a fresh one would at that moment
// and for that caller. Bounded in entries and in approximate bytes (the
// bounds of the verified-token cache, cache_max_entries and
// cache_max_bytes, each cache having its own).
type answerCache struct {
	lru       *lru.Cache[answerKey, *answer]
	maxBytes  int64
	addMu     sync.Mutex
	bytes     atomic.Int64
	hits      atomic.Uint64
	misses    atomic.Uint64
	evictions atomic.Uint64
}

func newAnswerCache(entries int, maxBytes int64) *answerCache {
	c := &answerCache{maxBytes: maxBytes}
	l, err := lru.NewWithEvict(entries, func(_ answerKey, a *answer) {
		c.bytes.Add(-a.size)
		c.evictions.Add(1)
	})
	if err != nil { // entries <= 0: never built (Config.Validate, NewValidator)
		panic(err)
	}
	c.lru = l
	return c
}

// get returns the answer for key if it may still be reused at now.
func (c *answerCache) get(key answerKey, now time.Time) *answer {
	a, ok := c.lru.Get(key)
	if !ok {
		c.misses.Add(1)
		return nil
	}
	if !now.Before(a.until) {
		c.lru.Remove(key)
		c.misses.Add(1)
		return nil
	}
	c.hits.Add(1)
	return a
}

// add keeps an answer whose until is set, in place of an older answer for
// the same key; one larger than the whole bound is not kept. Adds follow
// calls to an endpoint, so they are few: one at a time keeps the byte count
// exact when two answers for one token race.
func (c *answerCache) add(key answerKey, a *answer) {
	if a.size > c.maxBytes {
		return
	}
	c.addMu.Lock()
	defer c.addMu.Unlock()
	c.lru.Remove(key) // the evict callback takes the older answer's bytes off
	c.bytes.Add(a.size)
	c.lru.Add(key, a)
	for c.bytes.Load() > c.maxBytes {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
}

func (c *answerCache) stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(), Entries: c.lru.Len(), Bytes: c.bytes.Load()}
}
