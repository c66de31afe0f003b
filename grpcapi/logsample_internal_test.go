package grpcapi

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// logSampled writes the line a logger over the sampler would write, and
// makes a line's attributes only when the line is written: under a flood
// of one rejection, SampleBurst times per window; never for a level the
// handler does not log.
func TestLogSampler_MakesOnlyWrittenLines(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_760_000_000, 0)
	noTime := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	attrs := []slog.Attr{slog.String("reason", "EXPIRED"), slog.String("token", "t-1"), slog.Duration("took", time.Millisecond)}

	var viaLogger, viaSampled bytes.Buffer
	slog.New(NewLogSampler(slog.NewTextHandler(&viaLogger, noTime), func() time.Time { return now }, validateMsg)).LogAttrs(ctx, slog.LevelInfo, validateMsg, attrs...)
	s := NewLogSampler(slog.NewTextHandler(&viaSampled, noTime), func() time.Time { return now }, validateMsg)
	made := 0
	for range 100 {
		s.logSampled(ctx, slog.LevelInfo, validateMsg, "EXPIRED", func() []slog.Attr { made++; return attrs })
	}
	if made != SampleBurst {
		t.Errorf("attributes made %d times for 100 calls, want %d (the lines written)", made, SampleBurst)
	}
	lines := strings.Split(strings.TrimSpace(viaSampled.String()), "\n")
	if len(lines) != SampleBurst || lines[0] != strings.TrimSpace(viaLogger.String()) {
		t.Errorf("%d lines, the first %q; a logger writes %q", len(lines), lines[0], viaLogger.String())
	}
	s.logSampled(ctx, slog.LevelDebug, validateMsg, "VALID", func() []slog.Attr { made++; return attrs })
	if made != SampleBurst {
		t.Error("attributes made for a Debug line at Info")
	}
}
