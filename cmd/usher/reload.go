package main

import (
	"context"
	"reflect"
	"time"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/service"
)

// reloadConfig re-reads the config file and, when it is valid and its keys
// were tried, swaps the new validator in (issuers and audiences). The new
// validator starts with the running one's key sets where an issuer's key
// source did not change (service.WithPrevious), so a reload during an
// issuer's outage keeps its last good set. A bad file, or one that would
// leave an issuer that has keys now with none, is refused and the running
// config kept. Calls in flight on the old validator finish within
// grpcapi.MaxCallTime; then its fetching ends.
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
	running := s.api.Current()
	// Issuers whose key source did not change start with the running sets.
	v, err := s.newValidator(ctx, &cfg.Engine, service.WithPrevious(running))
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
	if err := v.KeysLost(running); err != nil {
		v.cancel()
		log.Error("reload refused: the new config would drop key sets the running one holds; keeping the running config", "err", err)
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
