package console_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/console"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

func mismatch(expected, actual string) service.VerdictEvent {
	return service.VerdictEvent{Reason: service.ReasonAudienceMismatch, Audience: expected, TokenAudience: actual}
}

func pairCount(st console.Stats, expected, actual string) uint64 {
	for _, m := range st.Mismatches {
		if m.Expected == expected && m.Actual == actual {
			return m.Count
		}
	}
	return 0
}

// TestRecorder_PairsBounded: at most MaxPairs pairs are kept apart; the
// mismatches of further pairs land in the overflow count, while pairs
// already kept go on counting; unregistered audiences are "other"; other
// reasons add no pair.
func TestRecorder_PairsBounded(t *testing.T) {
	clock := testkit.NewClock()
	rec := console.NewRecorder(clock.Now)
	for i := range console.MaxPairs + 10 {
		rec.ObserveVerdict(mismatch(fmt.Sprintf("api/%02d", i), "api/users"))
	}
	rec.ObserveVerdict(mismatch("api/00", "api/users")) // kept: counts on
	rec.ObserveVerdict(mismatch("api/new", "api/users"))
	rec.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonExpired, Audience: "api/zz"})
	rec.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonValid, Audience: "api/users"})

	st := rec.Stats()
	if len(st.Mismatches) != console.MaxPairs {
		t.Fatalf("%d pairs kept, want %d", len(st.Mismatches), console.MaxPairs)
	}
	if st.MismatchesOverflow != 11 {
		t.Errorf("overflow %d, want 11 (10 pairs past the bound, then api/new)", st.MismatchesOverflow)
	}
	if got := pairCount(st, "api/00", "api/users"); got != 2 {
		t.Errorf("api/00 × api/users = %d, want 2", got)
	}
	if st.Mismatches[0].Expected != "api/00" || st.Mismatches[0].Count != 2 {
		t.Errorf("largest first: %+v", st.Mismatches[0])
	}
	if got := pairCount(st, "api/new", "api/users"); got != 0 {
		t.Errorf("a pair past the bound was kept apart: %d", got)
	}

	other := console.NewRecorder(clock.Now)
	other.ObserveVerdict(mismatch("", "api/users"))
	other.ObserveVerdict(mismatch("api/invoices", ""))
	other.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonExpired})
	st = other.Stats()
	if pairCount(st, console.Other, "api/users") != 1 || pairCount(st, "api/invoices", console.Other) != 1 || len(st.Mismatches) != 2 {
		t.Errorf("unregistered audiences: %+v", st.Mismatches)
	}
}

func reasonCounts(st console.Stats, r service.Reason) []uint64 {
	for _, rc := range st.Reasons {
		if rc.Reason == r {
			return rc.Counts
		}
	}
	return nil
}

func at(counts ...uint64) []uint64 {
	out := make([]uint64, console.Minutes)
	copy(out[console.Minutes-len(counts):], counts)
	return out
}

// TestRecorder_MinuteBuckets: verdicts are counted per minute of the
// injected clock, the current minute last; a minute that falls out of the
// window is forgotten, and a bucket reused for a later minute starts at
// zero.
func TestRecorder_MinuteBuckets(t *testing.T) {
	clock := testkit.NewClock()
	clock.Advance(-time.Duration(clock.Now().Unix()%60) * time.Second) // at the start of a minute
	rec := console.NewRecorder(clock.Now)
	start := clock.Now()

	rec.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonValid})
	rec.ObserveVerdict(mismatch("api/invoices", "api/users"))
	clock.Advance(59 * time.Second) // same minute
	rec.ObserveVerdict(mismatch("api/invoices", "api/users"))
	clock.Advance(time.Second) // next minute
	rec.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonExpired})
	clock.Advance(2 * time.Minute) // two minutes later, nothing in between
	rec.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonExpired})
	rec.ObserveVerdict(service.VerdictEvent{Reason: service.Reason(99)}) // out of range: UNSPECIFIED

	st := rec.Stats()
	if len(st.Minutes) != console.Minutes || !st.Minutes[console.Minutes-1].Equal(start.Add(3*time.Minute).Truncate(time.Minute)) {
		t.Fatalf("minutes %v, want %d ending at %v", st.Minutes, console.Minutes, start.Add(3*time.Minute))
	}
	for i := 1; i < len(st.Minutes); i++ {
		if st.Minutes[i].Sub(st.Minutes[i-1]) != time.Minute {
			t.Fatalf("minutes not one apart: %v", st.Minutes)
		}
	}
	want := map[service.Reason][]uint64{
		service.ReasonValid:            at(1, 0, 0, 0),
		service.ReasonAudienceMismatch: at(2, 0, 0, 0),
		service.ReasonExpired:          at(1, 0, 1),
		service.ReasonUnspecified:      at(1),
	}
	if len(st.Reasons) != len(want) {
		t.Errorf("reasons %+v, want %d of them", st.Reasons, len(want))
	}
	for r, w := range want {
		if got := reasonCounts(st, r); !slices.Equal(got, w) {
			t.Errorf("%s per minute %v, want %v", r, got, w)
		}
	}
	if !slices.IsSortedFunc(st.Reasons, func(a, b console.ReasonCounts) int { return int(a.Reason - b.Reason) }) {
		t.Errorf("reasons not in the enum's order: %+v", st.Reasons)
	}

	// The first minute falls out of the window after Minutes minutes; its
	// bucket, reused, starts from zero.
	clock.Advance(time.Duration(console.Minutes-3) * time.Minute)
	rec.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonExpired})
	st = rec.Stats()
	if got := reasonCounts(st, service.ReasonValid); got != nil {
		t.Errorf("VALID of %d minutes ago still counted: %v", console.Minutes, got)
	}
	if got, w := reasonCounts(st, service.ReasonExpired), at(1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1); !slices.Equal(got, w) { // minutes 1, 3 and 15 of 1..15
		t.Errorf("EXPIRED per minute %v, want %v", got, w)
	}
	if pairCount(st, "api/invoices", "api/users") != 2 {
		t.Errorf("the mismatch matrix counts since start, not per window: %+v", st.Mismatches)
	}
	if !st.Since.Equal(start) {
		t.Errorf("since %v, want %v", st.Since, start)
	}

	clock.Advance(time.Hour)
	if st := rec.Stats(); len(st.Reasons) != 0 {
		t.Errorf("an hour later, reasons %+v, want none", st.Reasons)
	}
}

// TestRecorder_Concurrent: observers and snapshots at once (run with -race)
// lose no count.
func TestRecorder_Concurrent(t *testing.T) {
	rec := console.NewRecorder(nil)
	const workers, each = 4, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range each {
				rec.ObserveVerdict(mismatch("api/invoices", fmt.Sprintf("api/%d", (w*each+i)%3)))
			}
		}()
		go func() {
			defer wg.Done()
			for range 50 {
				_ = rec.Stats()
			}
		}()
	}
	wg.Wait()
	var total uint64
	for _, m := range rec.Stats().Mismatches {
		total += m.Count
	}
	if total != workers*each {
		t.Fatalf("%d mismatches counted, want %d", total, workers*each)
	}
}

// countingObserver counts what reaches it.
type countingObserver struct {
	mu                       sync.Mutex
	verdicts, intro, lookups int
}

func (c *countingObserver) ObserveVerdict(service.VerdictEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.verdicts++
}

func (c *countingObserver) ObserveIntrospection(service.IntrospectionEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.intro++
}

func (c *countingObserver) ObserveIntrospectionLookup(service.IntrospectionLookup) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lookups++
}

// TestRecorder_FedByTheEngine: a real engine trusting a real dev issuer,
// observed through Observer, reports a Users token sent to the Invoices API
// as that pair, and passes every event on to the next observer.
func TestRecorder_FedByTheEngine(t *testing.T) {
	rec := console.NewRecorder(nil)
	next := &countingObserver{}
	obs := rec.Observer(next)
	if _, ok := obs.(service.IntrospectionObserver); !ok {
		t.Fatal("the tee hides the next observer's introspection events")
	}
	if rec.Observer(nil) != service.Observer(rec) {
		t.Error("Observer(nil) is not the recorder itself")
	}
	e := testkit.NewDevEngine(t, service.WithObserver(obs))
	users := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, TTL: time.Hour})
	ctx := context.Background()
	if v := e.Validator.Validate(ctx, users, "api/invoices", nil); v.Reason != service.ReasonAudienceMismatch {
		t.Fatalf("users token at api/invoices: %s", v.Reason)
	}
	if v := e.Validator.Validate(ctx, users, "api/users", nil); v.Reason != service.ReasonValid {
		t.Fatalf("users token at api/users: %s", v.Reason)
	}
	if v := e.Validator.Validate(ctx, users, "api/unregistered", nil); v.Reason != service.ReasonAudienceMismatch {
		t.Fatalf("users token at api/unregistered: %s", v.Reason)
	}
	st := rec.Stats()
	if pairCount(st, "api/invoices", "api/users") != 1 || pairCount(st, console.Other, "api/users") != 1 {
		t.Errorf("pairs %+v, want api/invoices × api/users and other × api/users once each", st.Mismatches)
	}
	if got := reasonCounts(st, service.ReasonValid); got[console.Minutes-1] != 1 {
		t.Errorf("VALID this minute: %v", got)
	}
	obs.(service.IntrospectionObserver).ObserveIntrospection(service.IntrospectionEvent{})
	obs.(service.IntrospectionObserver).ObserveIntrospectionLookup(service.IntrospectionLookup{})
	next.mu.Lock()
	defer next.mu.Unlock()
	if next.verdicts != 3 || next.intro != 1 || next.lookups != 1 {
		t.Errorf("next observer saw %d verdicts, %d introspections, %d lookups; want 3, 1, 1", next.verdicts, next.intro, next.lookups)
	}
}
