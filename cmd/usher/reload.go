package main

import (
	"context"
	"reflect"
	"time"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/config"
)

// reloadConfig re-reads the config file and, when it is valid and its keys
// were tried, swaps the new validator in (issuers and audiences). A bad file
// is refused and the running config kept. Calls in flight on the old
// validator finish within grpcapi.MaxCallTime; then its fetching ends.
func (s *server) reloadConfig(ctx context.Context) {
	log := s.log
	if s.path == "" {
		log.Warn("reload asked, but this usher has no config file")
		return
	}
	cfg, err := config.Load(s.path)
	if err != nil {
		log.Error("reload refused: keeping the running config", "err", err)
		return
	}
	if startOnlyChanged(s.cfg, cfg) {
		log.Warn("reload: only issuers and audiences change on reload; listeners, tls, limits, tracing and ext_authz apply at start: restart usher to change them")
	}
	v, err := s.newValidator(ctx, &cfg.Engine)
	if err != nil {
		log.Error("reload refused: keeping the running config", "err", err)
		return
	}
	wctx, wcancel := context.WithTimeout(ctx, reloadWait)
	defer wcancel()
	if err := v.WaitTried(wctx); err != nil {
		v.cancel()
		log.Error("reload refused: the new issuers' keys were not tried in time; keeping the running config", "err", err)
		return
	}
	s.api.Swap(v.Validator)
	time.AfterFunc(grpcapi.MaxCallTime, s.vcancel)
	s.vcancel = v.cancel
	log.Info("config reloaded", "issuers", len(cfg.Engine.Issuers), "audiences", len(cfg.Engine.Audiences))
}

// startOnlyChanged reports whether next changes a setting that only a
// restart applies: anything but the engine's issuers and audiences.
func startOnlyChanged(running, next *config.Config) bool {
	a, b := *running, *next
	a.Engine.Issuers, a.Engine.Audiences = nil, nil
	b.Engine.Issuers, b.Engine.Audiences = nil, nil
	return !reflect.DeepEqual(a, b)
}
