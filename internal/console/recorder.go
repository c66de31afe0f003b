package console

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/usher-dev/usher/service"
)

const (
	// MaxPairs bounds the (expected, token) audience pairs of
	// AUDIENCE_MISMATCH verdicts counted one by one; mismatches between
	// further pairs are counted together (Stats.MismatchesOverflow).
	MaxPairs = 50
	// Minutes is how many minutes of verdicts by reason are kept, one
	// bucket a minute, the current minute included.
	Minutes = 15

	// Other stands for an audience outside the registry (the engine hands
	// it over as ""), as in the Prometheus labels.
	Other = "other"

	// reasonSlots holds every Reason value with room to spare; a value
	// beyond it is counted as UNSPECIFIED.
	reasonSlots = 32
)

// Recorder keeps what the console's "Where tokens go wrong" view shows: the
// audience-mismatch counts since start by (expected, token) audience, and
// verdicts by reason per minute over the last Minutes minutes. It is a
// service.Observer, fed the same bounded events as the Prometheus metrics:
// it never sees a token, and its memory is bounded (MaxPairs pairs, Minutes
// buckets of a fixed size). Safe for concurrent use.
type Recorder struct {
	now   func() time.Time
	start time.Time

	// ring counts verdicts with atomics, so that a verdict takes no lock;
	// mu guards the mismatch pairs and a bucket's turn to a new minute.
	ring     [Minutes]bucket
	mu       sync.Mutex
	pairs    map[pair]uint64
	overflow uint64
}

type pair struct{ expected, actual string }

// bucket counts one minute's verdicts by reason. A bucket is reused
// Minutes minutes later: a writer still counting into it then (one stalled
// for a quarter of an hour) is the only one who can miscount.
type bucket struct {
	minute atomic.Int64 // Unix time / 60 of the minute counted
	counts [reasonSlots]atomic.Uint64
}

// NewRecorder returns an empty recorder that reads the time from now (nil:
// time.Now).
func NewRecorder(now func() time.Time) *Recorder {
	if now == nil {
		now = time.Now
	}
	return &Recorder{now: now, start: now(), pairs: make(map[pair]uint64)}
}

var _ service.Observer = (*Recorder)(nil)

// ObserveVerdict implements service.Observer.
func (r *Recorder) ObserveVerdict(ev service.VerdictEvent) {
	m := unixMinute(r.now())
	slot := int(ev.Reason)
	if slot < 0 || slot >= reasonSlots {
		slot = int(service.ReasonUnspecified)
	}
	b := &r.ring[ringIndex(m)]
	if b.minute.Load() != m {
		r.turn(b, m)
	}
	b.counts[slot].Add(1)
	if ev.Reason != service.ReasonAudienceMismatch {
		return
	}
	p := pair{orOther(ev.Audience), orOther(ev.TokenAudience)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pairs[p]; ok || len(r.pairs) < MaxPairs {
		r.pairs[p]++
		return
	}
	r.overflow++
}

// turn empties b for minute m, once, unless another writer did.
func (r *Recorder) turn(b *bucket, m int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b.minute.Load() == m {
		return
	}
	for i := range b.counts {
		b.counts[i].Store(0)
	}
	b.minute.Store(m)
}

// Stats is a snapshot of a Recorder.
type Stats struct {
	// Now is when the snapshot was taken; Since when counting started.
	Now, Since time.Time
	// Mismatches are the AUDIENCE_MISMATCH counts since start by pair,
	// the largest first.
	Mismatches []Mismatch
	// MismatchesOverflow counts the mismatches between pairs beyond the
	// first MaxPairs.
	MismatchesOverflow uint64
	// Minutes are the starts of the last Minutes minutes, oldest first;
	// the last is the current minute.
	Minutes []time.Time
	// Reasons are the reasons seen in those minutes, in the Reason enum's
	// order, each with a count per minute.
	Reasons []ReasonCounts
}

// Mismatch is how often tokens for Actual were sent to (validated with the
// expected audience) Expected. Either is Other when not registered.
type Mismatch struct {
	Expected, Actual string
	Count            uint64
}

// ReasonCounts are a reason's verdicts per minute, aligned with
// Stats.Minutes.
type ReasonCounts struct {
	Reason service.Reason
	Counts []uint64
}

// Stats returns what the recorder holds now.
func (r *Recorder) Stats() Stats {
	now := r.now()
	cur := unixMinute(now)
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Stats{Now: now, Since: r.start, MismatchesOverflow: r.overflow}
	for p, n := range r.pairs {
		st.Mismatches = append(st.Mismatches, Mismatch{Expected: p.expected, Actual: p.actual, Count: n})
	}
	slices.SortFunc(st.Mismatches, func(a, b Mismatch) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Expected, b.Expected), cmp.Compare(a.Actual, b.Actual))
	})
	var perReason [reasonSlots][]uint64
	for i := range Minutes {
		m := cur - Minutes + 1 + int64(i)
		st.Minutes = append(st.Minutes, time.Unix(m*60, 0).UTC())
		b := &r.ring[ringIndex(m)]
		if b.minute.Load() != m {
			continue // nothing counted in that minute
		}
		for reason := range b.counts {
			n := b.counts[reason].Load()
			if n == 0 {
				continue
			}
			if perReason[reason] == nil {
				perReason[reason] = make([]uint64, Minutes)
			}
			perReason[reason][i] = n
		}
	}
	for reason, counts := range perReason {
		if counts != nil {
			st.Reasons = append(st.Reasons, ReasonCounts{Reason: service.Reason(reason), Counts: counts})
		}
	}
	return st
}

// unixMinute numbers the minute t is in.
func unixMinute(t time.Time) int64 {
	s := t.Unix()
	m := s / 60
	if s < 0 && s%60 != 0 {
		m-- // floor, not truncation, before 1970
	}
	return m
}

func ringIndex(m int64) int {
	i := m % Minutes
	if i < 0 {
		i += Minutes
	}
	return int(i)
}

func orOther(aud string) string {
	if aud == "" {
		return Other
	}
	return aud
}
