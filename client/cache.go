package client

import (
	"context"
	"crypto/sha256"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// Cache defaults.
const (
	DefaultCacheEntries = 10_000
	DefaultCacheTTL     = time.Minute
)

// CacheStats counts verdict cache lookups.
type CacheStats struct {
	Hits   uint64
	Misses uint64
}

// verdictCache remembers usher's answers so a repeated token costs no
// network hop. It is keyed on (SHA-256 of the token, audience, required
// scopes): the answer depends on all three. An entry never outlives the
// token's exp nor maxTTL. Only answers the reason table marks cacheable are
// kept: not those that can change without the token changing (e.g.
// KEYS_UNAVAILABLE, UNKNOWN_KEY after a rotation), not an answer that fails
// closed, and never a transport error. Nor the answer for a sender-
// constrained token (claims with a confirmation) nor one for a call that
// carried a proof or a client certificate: the interceptor does not ask the
// cache for those.
// Concurrent identical misses share one call.
type verdictCache struct {
	entries *lru.Cache[cacheKey, cacheEntry]
	maxTTL  time.Duration
	now     func() time.Time
	flight  singleflight.Group
	hits    atomic.Uint64
	misses  atomic.Uint64
}

type cacheKey struct {
	token  [sha256.Size]byte
	scopes string // audience and sorted scopes, NUL-separated
}

type cacheEntry struct {
	resp    *usherv1.ValidateTokenResponse
	expires time.Time
}

func newVerdictCache(size int, maxTTL time.Duration, now func() time.Time) *verdictCache {
	c, err := lru.New[cacheKey, cacheEntry](size)
	if err != nil { // size <= 0, refused by the options already
		panic(err)
	}
	return &verdictCache{entries: c, maxTTL: maxTTL, now: now}
}

func makeKey(token, audience string, scopes []string) cacheKey {
	// Hashed in place: Sum256 neither keeps nor changes its input.
	k := cacheKey{token: sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))}
	switch len(scopes) {
	case 0:
		k.scopes = audience
	default:
		s := slices.Clone(scopes)
		slices.Sort(s)
		k.scopes = audience + "\x00" + strings.Join(s, "\x00")
	}
	return k
}

// lookup returns a live cached answer (the hit path allocates nothing).
func (c *verdictCache) lookup(key cacheKey) (*usherv1.ValidateTokenResponse, bool) {
	e, ok := c.entries.Get(key)
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	if !c.now().Before(e.expires) {
		c.entries.Remove(key)
		c.misses.Add(1)
		return nil, false
	}
	c.hits.Add(1)
	return e.resp, true
}

// fetch asks usher after a lookup missed; concurrent identical misses share
// one call, and the answer is stored when it may be.
func (c *verdictCache) fetch(ctx context.Context, key cacheKey, fetch func(context.Context) (*usherv1.ValidateTokenResponse, error)) (*usherv1.ValidateTokenResponse, error) {
	ch := c.flight.DoChan(string(key.token[:])+key.scopes, func() (any, error) {
		// Shared by every waiting caller: not cancelled by the first one,
		// but bounded by its deadline.
		fctx := context.WithoutCancel(ctx)
		if dl, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			fctx, cancel = context.WithDeadline(fctx, dl)
			defer cancel()
		}
		resp, err := fetch(fctx)
		if err == nil {
			c.store(key, resp)
		}
		return resp, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*usherv1.ValidateTokenResponse), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *verdictCache) store(key cacheKey, resp *usherv1.ValidateTokenResponse) {
	// A bound token (claims with cnf) is good only with its proof or
	// certificate, which a later call with the same token may lack.
	if !ruleOf(resp).Cacheable || resp.GetClaims().GetConfirmation() != nil {
		return
	}
	now := c.now()
	expires := now.Add(c.maxTTL)
	if exp := resp.GetClaims().GetExpiresAt(); exp != nil && resp.GetValid() && exp.AsTime().Before(expires) {
		expires = exp.AsTime()
	}
	if !expires.After(now) {
		return
	}
	c.entries.Add(key, cacheEntry{resp: resp, expires: expires})
}

func (c *verdictCache) stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load()}
}
