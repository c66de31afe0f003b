package grpcapi

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Log sampling: a caller chooses how many rejections it sends, so a line per
// rejection would let it fill the disk. Per window, the first SampleBurst
// lines of each (message, reason) are logged whole and the rest are counted;
// one summary line per (message, reason) then says how many were not logged.
const (
	SampleBurst  = 10
	SampleWindow = 10 * time.Second
	// maxSampleKeys bounds the (message, reason) pairs a window tracks; the
	// pairs beyond it share one count under the reason "other".
	maxSampleKeys = 64
)

// LogSampler is a slog.Handler that bounds the per-request lines an outsider
// can cause. Records at Info or above whose message is one of the sampled
// messages are sampled per (message, "reason" attribute) and window; every
// other record passes through unchanged. At most (SampleBurst + 1) lines per
// pair per window reach the next handler, whatever the request rate.
//
// Summaries are written by the first sampled record after the window ended,
// by Flush (call it on a ticker: Run does) and by FlushAll (at shutdown).
type LogSampler struct {
	next slog.Handler
	st   *sampleState
}

type sampleKey struct{ msg, reason string }

type sampleCount struct {
	logged, dropped int
	level           slog.Level
}

// sampleState is shared by a LogSampler and the handlers WithAttrs and
// WithGroup derive from it.
type sampleState struct {
	root     slog.Handler // where summaries go
	now      func() time.Time
	messages []string

	mu     sync.Mutex
	start  time.Time // of the current window; zero when none is open
	counts map[sampleKey]*sampleCount
}

// NewLogSampler samples the records of next whose message is one of
// messages. now is the clock windows are measured with (nil: time.Now).
func NewLogSampler(next slog.Handler, now func() time.Time, messages ...string) *LogSampler {
	if now == nil {
		now = time.Now
	}
	return &LogSampler{next: next, st: &sampleState{root: next, now: now, messages: messages, counts: map[sampleKey]*sampleCount{}}}
}

// Enabled implements slog.Handler.
func (s *LogSampler) Enabled(ctx context.Context, l slog.Level) bool { return s.next.Enabled(ctx, l) }

// WithAttrs implements slog.Handler; the result shares the sampling state.
func (s *LogSampler) WithAttrs(as []slog.Attr) slog.Handler {
	return &LogSampler{next: s.next.WithAttrs(as), st: s.st}
}

// WithGroup implements slog.Handler; the result shares the sampling state.
func (s *LogSampler) WithGroup(name string) slog.Handler {
	return &LogSampler{next: s.next.WithGroup(name), st: s.st}
}

// Handle implements slog.Handler.
func (s *LogSampler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo || !slices.Contains(s.st.messages, r.Message) {
		return s.next.Handle(ctx, r)
	}
	pass, summaries := s.st.admit(sampleKey{r.Message, reasonOf(r)}, r.Level)
	s.st.write(ctx, summaries)
	if !pass {
		return nil
	}
	return s.next.Handle(ctx, r)
}

// logSampled logs a record of msg at level whose "reason" attribute is
// reason, as a logger over s would, but asks the sampler first: attrs (the
// record's attributes, reason among them) is called only for a line that
// is written, so a flood of rejections costs a count, not a line's making.
func (s *LogSampler) logSampled(ctx context.Context, level slog.Level, msg, reason string, attrs func() []slog.Attr) {
	if !s.next.Enabled(ctx, level) {
		return
	}
	if level >= slog.LevelInfo && slices.Contains(s.st.messages, msg) {
		pass, summaries := s.st.admit(sampleKey{msg, reason}, level)
		s.st.write(ctx, summaries)
		if !pass {
			return
		}
	}
	var pcs [1]uintptr
	runtime.Callers(2, pcs[:]) // as slog.Logger does: the caller of logSampled
	r := slog.NewRecord(time.Now(), level, msg, pcs[0])
	r.AddAttrs(attrs()...)
	_ = s.next.Handle(ctx, r)
}

// Flush writes the summaries of a window that has ended.
func (s *LogSampler) Flush(ctx context.Context) { s.st.write(ctx, s.st.rollover(false)) }

// Run flushes at every tick until ctx is done, then writes what is left.
func (s *LogSampler) Run(ctx context.Context, ticks <-chan time.Time) {
	for {
		select {
		case <-ticks:
			s.Flush(ctx)
		case <-ctx.Done():
			s.FlushAll(ctx)
			return
		}
	}
}

// FlushAll writes every summary, the window over or not: call it last, at
// shutdown, so that the last window's count is not lost.
func (s *LogSampler) FlushAll(ctx context.Context) {
	s.st.write(context.WithoutCancel(ctx), s.st.rollover(true))
}

func reasonOf(r slog.Record) string {
	reason := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "reason" {
			reason = a.Value.String()
			return false
		}
		return true
	})
	return reason
}

// admit counts a record and says whether it is logged whole, with the
// summaries of the window it closed, if any.
func (st *sampleState) admit(k sampleKey, level slog.Level) (bool, []slog.Record) {
	summaries := st.rollover(false)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.start.IsZero() {
		st.start = st.now()
	}
	c := st.counts[k]
	if c == nil {
		if len(st.counts) >= maxSampleKeys {
			k.reason = "other"
			c = st.counts[k]
		}
		if c == nil {
			c = &sampleCount{level: level}
			st.counts[k] = c
		}
	}
	if c.logged < SampleBurst {
		c.logged++
		return true, summaries
	}
	c.dropped++
	return false, summaries
}

// rollover closes the window when it has ended (or when force is set) and
// returns one summary record per pair with lines that were not logged.
func (st *sampleState) rollover(force bool) []slog.Record {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	if st.start.IsZero() || (!force && now.Sub(st.start) < SampleWindow) {
		return nil
	}
	took := now.Sub(st.start)
	if took >= time.Second {
		took = took.Round(time.Second)
	}
	var out []slog.Record
	for k, c := range st.counts {
		if c.dropped == 0 {
			continue
		}
		r := slog.NewRecord(now, c.level, fmt.Sprintf("%s: %d more %s lines in the last %s, not logged one by one", k.msg, c.dropped, k.reason, took), 0)
		r.AddAttrs(slog.String("reason", k.reason), slog.Int("suppressed", c.dropped), slog.Duration("window", took))
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b slog.Record) int { return strings.Compare(a.Message, b.Message) })
	st.start = time.Time{}
	clear(st.counts)
	return out
}

func (st *sampleState) write(ctx context.Context, summaries []slog.Record) {
	for _, r := range summaries {
		_ = st.root.Handle(ctx, r)
	}
}
