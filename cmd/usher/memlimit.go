package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// memoryLimitShare is the share of the container's memory limit that
// usher serve gives the Go runtime as its soft limit when GOMEMLIMIT is not
// set: the rest is for what the runtime does not count against it (the
// binary, thread stacks outside the heap, kernel buffers) and for the
// collector's lag.
const memoryLimitShare = 0.9

// setMemoryLimit sets the Go runtime's soft memory limit (GOMEMLIMIT) to
// memoryLimitShare of the container's memory limit, which cgroupLimit
// reads (memlimit.FromCgroup: cgroup v1 or v2), unless GOMEMLIMIT is set:
// the collector then works harder before the kernel's OOM killer would
// step in. It logs the limit in force and returns what puts the previous
// one back (serve also runs inside tests). GOGC is left as it is.
func setMemoryLimit(log *slog.Logger, cgroupLimit memlimit.Provider) (restore func()) {
	prev := debug.SetMemoryLimit(-1)
	restore = func() { debug.SetMemoryLimit(prev) }
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		log.Info("memory limit", "gomemlimit", sizeOrNone(prev), "source", "GOMEMLIMIT="+v)
		return restore
	}
	limit, err := cgroupLimit()
	switch {
	case errors.Is(err, memlimit.ErrNoLimit):
		log.Info("memory limit", "gomemlimit", sizeOrNone(prev), "source", "none: the cgroup sets no memory limit")
	case err != nil:
		log.Warn("memory limit", "gomemlimit", sizeOrNone(prev), "source", "none: the cgroup memory limit could not be read", "err", err)
	default:
		soft := int64(min(float64(limit)*memoryLimitShare, math.MaxInt64))
		debug.SetMemoryLimit(soft)
		log.Info("memory limit", "gomemlimit", sizeOrNone(soft), "source", fmt.Sprintf("%.0f %% of the cgroup memory limit, %s", 100*memoryLimitShare, sizeOrNone(int64(min(limit, math.MaxInt64)))))
	}
	return restore
}

// sizeOrNone writes a memory limit in MiB, or "none" for the runtime's
// unlimited value.
func sizeOrNone(n int64) string {
	if n == math.MaxInt64 {
		return "none"
	}
	return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
}
