package main

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// setMemoryLimit with a container's limit read by a fake cgroup reader
// (memlimit's reader takes no path: its own tests read fixture files):
// GOMEMLIMIT is set to 90 % of a 512 MiB limit and the line says so; with
// GOMEMLIMIT in the environment the reader is not asked and the limit is
// left; with no limit, or an unreadable one, nothing is set. restore puts
// the previous limit back every time.
func TestSetMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	for _, c := range []struct {
		name     string
		env      string // GOMEMLIMIT; "" unset
		limit    uint64
		err      error
		want     int64
		wantLine string
	}{
		{"from the cgroup", "", 512 * mib, nil, 512 * mib * 9 / 10, `msg="memory limit" gomemlimit=460.8MiB source="90 % of the cgroup memory limit, 512.0MiB"`},
		{"GOMEMLIMIT set", "300MiB", 512 * mib, nil, before, `source="GOMEMLIMIT=300MiB"`},
		{"no cgroup limit", "", 0, memlimit.ErrNoLimit, before, `source="none: the cgroup sets no memory limit"`},
		{"unreadable", "", 0, errors.New("permission denied"), before, `level=WARN msg="memory limit" gomemlimit=`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv("GOMEMLIMIT", c.env)
			}
			var logs bytes.Buffer
			asked := false
			restore := setMemoryLimit(slog.New(slog.NewTextHandler(&logs, nil)), func() (uint64, error) { asked = true; return c.limit, c.err })
			if got := debug.SetMemoryLimit(-1); got != c.want {
				t.Errorf("memory limit %d, want %d", got, c.want)
			}
			if asked != (c.env == "") {
				t.Errorf("cgroup reader asked: %v, with GOMEMLIMIT=%q", asked, c.env)
			}
			if !strings.Contains(logs.String(), c.wantLine) || strings.Count(logs.String(), "\n") != 1 {
				t.Errorf("logged %q, want one line with %q", logs.String(), c.wantLine)
			}
			restore()
			if got := debug.SetMemoryLimit(-1); got != before {
				t.Errorf("after restore: %d, want %d", got, before)
			}
		})
	}
	if sizeOrNone(math.MaxInt64) != "none" {
		t.Error("the runtime's unlimited value is not written as none")
	}
}
