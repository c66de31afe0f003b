package service

import (
	"crypto/sha256"
	"sync/atomic"
	"time"
	"unsafe"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Verified-token cache bounds beyond those of the configuration.
const (
	// maxCacheAge bounds an entry's life, exp or not: key-set changes are
	// also checked on every hit, this bounds everything else.
	maxCacheAge = time.Hour
	// cacheEntryOverhead approximates an entry's memory beyond its token's
	// length (maps, slices, the LRU's own bookkeeping).
	cacheEntryOverhead = 1280
)

// CacheStats counts the verified-token cache's work.
type CacheStats struct {
	Hits, Misses, Evictions uint64
	Entries                 int
	Bytes                   int64
}

// verifiedCache remembers what a signature check established about a token
// (its parsed claims, issuer and key), keyed on the token's SHA-256, so that a
// repeated token skips parsing and the signature. Time, audience and scope
// checks still run on every request, so verdicts stay exact. An entry is
// dropped when its key leaves the issuer's key set, when the set goes stale,
// and after the token's exp. Bounded in entries and in approximate bytes.
type verifiedCache struct {
	lru       *lru.Cache[[sha256.Size]byte, *verified]
	maxBytes  int64
	bytes     atomic.Int64
	hits      atomic.Uint64
	misses    atomic.Uint64
	evictions atomic.Uint64
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

func newVerifiedCache(entries int, maxBytes int64) *verifiedCache {
	c := &verifiedCache{maxBytes: maxBytes}
	l, err := lru.NewWithEvict(entries, func(_ [sha256.Size]byte, e *verified) {
		c.bytes.Add(-e.size)
		c.evictions.Add(1)
	})
	if err != nil { // entries <= 0: refused by Config.Validate
		panic(err)
	}
	c.lru = l
	return c
}

func tokenKey(tok string) [sha256.Size]byte {
	// Hashed in place: Sum256 neither keeps nor changes its input.
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(tok), len(tok)))
}

// get returns the entry for a token if it still stands at now.
func (c *verifiedCache) get(key [sha256.Size]byte, now time.Time) *verified {
	e, ok := c.lru.Get(key)
	if !ok {
		return nil
	}
	if now.After(e.until) || !e.keyStillPublished() {
		c.lru.Remove(key)
		return nil
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
// caller's verdict shares.
func (c *verifiedCache) add(key [sha256.Size]byte, tokLen int, t *parsedToken, ik *issuerKeys, k *verifyKey, until time.Time) *verified {
	kept := *t
	kept.raw, kept.signingInput, kept.signature = "", "", nil
	e := &verified{t: &kept, ik: ik, key: k, claims: kept.toClaims(), until: until, size: int64(2*tokLen + cacheEntryOverhead)}
	if e.size > c.maxBytes {
		return e
	}
	// Two misses of one token may race to add it: the first one stays, so
	// that the byte count holds each entry once (an Add over an entry would
	// replace it without the eviction callback).
	if present, _ := c.lru.ContainsOrAdd(key, e); present {
		return e
	}
	c.bytes.Add(e.size)
	for c.bytes.Load() > c.maxBytes {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
	return e
}

func (c *verifiedCache) stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(), Entries: c.lru.Len(), Bytes: c.bytes.Load()}
}
