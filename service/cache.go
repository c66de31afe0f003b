package service

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Verified-token cache bounds beyond those of the configuration.
const (
	// maxCacheAge bounds an entry's life, exp or not: key-set changes are
	// also checked on every hit, this bounds everything else.
	maxCacheAge = time.Hour
	// cacheEntryOverhead approximates an entry's memory beyond its token's
	// length (maps, slices, the LRU's own bookkeeping).
	cacheEntryOverhead = 1280
	// memoPerTokenByte and memoOverhead approximate what an adapter keeps
	// beside an entry (MemoClaims): the gRPC adapter's converted claims and
	// their encoding measured 4 to 4.7 bytes a token byte. Counted for
	// every entry, so that the byte bound holds for a server.
	memoPerTokenByte = 4
	memoOverhead     = 512
)

// entrySize approximates the memory an entry for a token of tokLen bytes
// holds, an adapter's converted claims included.
func entrySize(tokLen int) int64 {
	return int64((2+memoPerTokenByte)*tokLen + cacheEntryOverhead + memoOverhead)
}

// CacheStats counts the verified-token cache's work.
type CacheStats struct {
	Hits, Misses, Evictions uint64
	Entries                 int
	Bytes                   int64
}

// Admission: the share of the verified-token cache that takes every token,
// and how many sightings the doorkeeper remembers per entry of the cache.
const (
	// windowShare: the window holds 1/windowShare of the entries (1 %, as
	// Caffeine's does).
	windowShare = 100
	// minWindow is its least size: a cache of up to minWindow entries
	// admits every token.
	minWindow = 64
	// doorSightingsPerEntry sizes a doorkeeper generation: a one-off token
	// is remembered across eight to sixteen times as many other sightings
	// as the cache holds entries (TinyLFU samples ten times the cache).
	doorSightingsPerEntry = 8
)

// verifiedCache remembers what a signature check established about a token
// (its parsed claims, issuer and key), keyed on the token's SHA-256, so that
// a repeated token skips parsing and the signature. Time, audience and scope
// checks still run on every request, so verdicts stay exact. An entry is
// dropped when its key leaves the issuer's key set, when the set goes stale,
// and after the token's exp. Bounded in entries and in approximate bytes
// (the doorkeeper's fixed share included).
//
// Admission (W-TinyLFU's shape, with a doorkeeper for the frequency
// sketch): a token sighted for the first time goes into a small window
// (1 % of the entries, at least 64), so that a quick second use still hits;
// a second use in the window, or a second sighting after it left the
// window, moves the token into the main part. A flood of tokens seen once
// only churns the window: it neither evicts the repeated tokens of the main
// part nor keeps more than the window's entries alive for the collector.
type verifiedCache struct {
	mu     sync.Mutex // guards window, main and door
	window segment
	main   segment // lru nil when the cache is no larger than its window
	door   *doorkeeper

	maxBytes  int64 // for entries: the bound less the doorkeeper's share
	bytes     atomic.Int64
	entries   atomic.Int64
	hits      atomic.Uint64
	misses    atomic.Uint64
	evictions atomic.Uint64
}

// segment is one LRU part of the cache and its entry bound.
type segment struct {
	lru *simplelru.LRU[[sha256.Size]byte, *verified]
	max int
}

// verified is a token whose signature verified. It holds no raw token and
// no signature: only what the checks after the signature read.
type verified struct {
	t      *parsedToken
	ik     *issuerKeys
	key    *verifyKey
	claims *Claims // shared by every verdict served from this entry: read-only
	until  time.Time
	size   int64
}

// newVerifiedCache holds at most entries entries and maxBytes bytes, its
// doorkeeper's included.
func newVerifiedCache(entries int, maxBytes int64) *verifiedCache {
	c := &verifiedCache{maxBytes: maxBytes}
	// No more entries fit than the byte bound allows at the least size.
	capacity := int(min(int64(entries), maxBytes/entrySize(0)))
	w := min(capacity, max(capacity/windowShare, minWindow))
	c.window = newSegment(max(w, 1))
	if m := capacity - w; m > 0 {
		c.main = newSegment(m)
		c.door = newDoorkeeper(doorSightingsPerEntry * capacity)
		c.maxBytes -= c.door.bytes()
	}
	return c
}

// newSegment is an empty segment of size entries.
func newSegment(size int) segment {
	l, err := simplelru.NewLRU[[sha256.Size]byte, *verified](size, nil)
	if err != nil { // size <= 0: entries <= 0 is refused by Config.Validate
		panic(err)
	}
	return segment{lru: l, max: size}
}

func tokenKey(tok string) [sha256.Size]byte {
	// Hashed in place: Sum256 neither keeps nor changes its input.
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(tok), len(tok)))
}

// get returns the entry for a token if it still stands at now. A hit in
// the window is the token's second use: it moves to the main part.
func (c *verifiedCache) get(key [sha256.Size]byte, now time.Time) *verified {
	c.mu.Lock()
	var e *verified
	ok, inWindow := false, false
	if c.main.lru != nil {
		e, ok = c.main.lru.Get(key)
	}
	if !ok {
		e, ok = c.window.lru.Peek(key)
		inWindow = ok
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	if now.After(e.until) || !e.keyStillPublished() {
		c.remove(key, e)
		return nil
	}
	if inWindow && c.main.lru != nil {
		c.promote(key, e)
	}
	c.hits.Add(1)
	return e
}

// missed counts a lookup of a JWT that get did not answer (an opaque token's
// lookup is not a miss of this cache).
func (c *verifiedCache) missed() { c.misses.Add(1) }

// keyStillPublished: the key that verified the token is in the issuer's
// current, fresh set.
func (e *verified) keyStillPublished() bool {
	ks := e.ik.keys()
	if ks == nil || e.ik.stale(ks) {
		return false
	}
	if e.key.kid != "" {
		cur := ks.byKID[e.key.kid]
		return cur == e.key || (cur != nil && cur.equal(e.key))
	}
	for _, k := range ks.keys {
		if k == e.key || k.equal(e.key) {
			return true
		}
	}
	return false
}

// add keeps a verified token and returns the entry, whose claims the
// caller's verdict shares: in the main part on the token's second
// sighting, else in the window.
func (c *verifiedCache) add(key [sha256.Size]byte, tokLen int, t *parsedToken, ik *issuerKeys, k *verifyKey, until time.Time) *verified {
	kept := *t
	kept.raw, kept.signingInput, kept.signature = "", "", nil
	e := &verified{t: &kept, ik: ik, key: k, claims: kept.toClaims(), until: until, size: entrySize(tokLen)}
	if e.size > c.maxBytes {
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Two misses of one token may race to add it: the first one stays, so
	// that the byte count holds each entry once.
	if c.window.lru.Contains(key) || (c.main.lru != nil && c.main.lru.Contains(key)) {
		return e
	}
	s := &c.window
	if c.main.lru != nil && c.door.sighted(key) {
		s = &c.main
	}
	c.put(s, key, e)
	c.bytes.Add(e.size)
	for c.bytes.Load() > c.maxBytes && c.evictForBytes() {
	}
	return e
}

// put adds e to s, evicting s's oldest entry when s is full. Under mu.
func (c *verifiedCache) put(s *segment, key [sha256.Size]byte, e *verified) {
	if s.lru.Len() >= s.max {
		c.evictOldest(s)
	}
	s.lru.Add(key, e)
	c.entries.Add(1)
}

// evictOldest drops s's least recently used entry. Under mu.
func (c *verifiedCache) evictOldest(s *segment) bool {
	_, e, ok := s.lru.RemoveOldest()
	if ok {
		c.dropped(e)
		c.evictions.Add(1)
	}
	return ok
}

// evictForBytes makes room under the byte bound: tokens seen once (the
// window's) go first, repeated ones (the main part's) then. Under mu.
func (c *verifiedCache) evictForBytes() bool {
	if c.window.lru.Len() > 1 || c.main.lru == nil || c.main.lru.Len() == 0 {
		return c.evictOldest(&c.window)
	}
	return c.evictOldest(&c.main)
}

// dropped takes an entry that left the cache off the counts. Under mu.
func (c *verifiedCache) dropped(e *verified) {
	c.bytes.Add(-e.size)
	c.entries.Add(-1)
}

// remove drops key's entry, if it is still e, as an eviction (an entry
// that no longer stands).
func (c *verifiedCache) remove(key [sha256.Size]byte, e *verified) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range []*segment{&c.main, &c.window} {
		if s.lru == nil {
			continue
		}
		if cur, ok := s.lru.Peek(key); ok && cur == e {
			s.lru.Remove(key)
			c.dropped(e)
			c.evictions.Add(1)
			return
		}
	}
}

// promote moves e from the window to the main part, if it is still there.
func (c *verifiedCache) promote(key [sha256.Size]byte, e *verified) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.window.lru.Peek(key); !ok || cur != e {
		return
	}
	c.window.lru.Remove(key)
	c.entries.Add(-1)
	c.put(&c.main, key, e)
}

func (c *verifiedCache) stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(), Entries: int(c.entries.Load()), Bytes: c.bytes.Load()}
}
