package service

import "time"

// What a hint may read of an issuer's token-driven refetches (the fetching
// itself is in fetch.go).

// tokenRefetchMark changes whenever refreshForToken starts a refetch: a
// caller that reads it before and after refreshForToken knows whether the
// key set was refetched for its token (or for one whose refetch it joined).
func (ik *issuerKeys) tokenRefetchMark() int64 { return ik.lastForced.Load() }

// refetchWait is how long from now refreshForToken will not refetch: the
// rest of unknown_kid_cooldown since the last token-driven refetch, or of
// the wait the issuer asked for with Retry-After (retryAfter is true then).
// It is 0 when a token would refetch now, and always for a static key set.
func (ik *issuerKeys) refetchWait(now time.Time) (wait time.Duration, retryAfter bool) {
	if ik.static {
		return 0, false
	}
	n := now.UnixNano()
	if last := ik.lastForced.Load(); last != 0 {
		wait = time.Duration(last + int64(ik.cfg.UnknownKIDCooldown) - n)
	}
	if nb := time.Duration(ik.notBefore.Load() - n); nb > wait {
		return nb, true
	}
	return max(wait, 0), false
}
