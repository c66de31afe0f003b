package main

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/replaystore"
	"github.com/usher-dev/usher/service"
)

// reloadConfig re-reads the config file and, when it is valid and its keys
// were tried, swaps the new validator in (issuers, audiences and the DPoP
// replay store). The new validator starts with the running one's key sets
// where an issuer's key source did not change (service.WithPrevious), so a
// reload during an issuer's outage keeps its last good set. A bad file, one
// that would leave an issuer that has keys now with none, or a new
// dpop.replay_store that does not answer is refused and the running config
// kept. Calls in flight on the old validator finish within
// grpcapi.MaxCallTime; then its fetching ends and a replaced replay store
// is closed.
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
		log.Warn("reload: only issuers, audiences and dpop.replay_store change on reload; listeners, tls, limits, tracing and ext_authz apply at start: restart usher to change them")
	}
	store, err := s.reloadReplayStore(ctx, cfg.ReplayStore)
	if err != nil {
		log.Error("reload refused: keeping the running config", "err", err)
		return
	}
	newStore := store != s.replay
	refuse := func(msg string, err error) {
		if newStore {
			closeReplayStore(store)
		}
		log.Error(msg, "err", err)
	}
	running := s.api.Current()
	// Issuers whose key source did not change start with the running sets.
	v, err := s.newValidator(ctx, &cfg.Engine, store, service.WithPrevious(running))
	if err != nil {
		refuse("reload refused: keeping the running config", err)
		return
	}
	wctx, wcancel := context.WithTimeout(ctx, reloadWait)
	defer wcancel()
	if err := v.WaitTried(wctx); err != nil {
		v.cancel()
		refuse("reload refused: the new issuers' keys were not tried in time; keeping the running config", err)
		return
	}
	if err := v.KeysLost(running); err != nil {
		v.cancel()
		refuse("reload refused: the new config would drop key sets the running one holds; keeping the running config", err)
		return
	}
	s.api.Swap(v.Validator)
	time.AfterFunc(grpcapi.MaxCallTime, s.vcancel)
	s.vcancel = v.cancel
	if newStore {
		s.swapReplayStore(store, cfg.ReplayStore)
	}
	log.Info("config reloaded", "issuers", len(cfg.Engine.Issuers), "audiences", len(cfg.Engine.Audiences), "dpop_replay_store", replayStoreName(store))
}

// reloadReplayStore is the replay store of a reloaded config: the running
// one when dpop.replay_store did not change, else a new one that answered
// a PING (swapping in a store that does not answer would leave every
// DPoP-bound token UNAVAILABLE).
func (s *server) reloadReplayStore(ctx context.Context, url string) (*replaystore.Redis, error) {
	if url == s.replayURL {
		return s.replay, nil
	}
	store, err := s.newReplayStore(url)
	if err != nil || store == nil {
		return nil, err
	}
	if err := store.Ping(ctx); err != nil {
		closeReplayStore(store)
		return nil, fmt.Errorf("dpop.replay_store: the new store does not answer (%w): with it every DPoP-bound token would be answered UNAVAILABLE; start it or fix the URL, then reload again", err)
	}
	return store, nil
}

// swapReplayStore makes store (nil: in memory) the running replay store.
// The old one is closed once calls in flight on the old validator are over.
func (s *server) swapReplayStore(store *replaystore.Redis, url string) {
	old := s.replay
	s.replay, s.replayURL = store, url
	s.replayDown.Store(false)
	time.AfterFunc(grpcapi.MaxCallTime, func() { closeReplayStore(old) })
	s.log.Info("dpop replay store changed", "from", replayStoreName(old), "to", replayStoreName(store))
}

// startOnlyChanged reports whether next changes a setting that only a
// restart applies: anything but the engine's issuers and audiences and the
// replay store.
func startOnlyChanged(running, next *config.Config) bool {
	a, b := *running, *next
	a.Engine.Issuers, a.Engine.Audiences, a.ReplayStore = nil, nil, ""
	b.Engine.Issuers, b.Engine.Audiences, b.ReplayStore = nil, nil, ""
	return !reflect.DeepEqual(a, b)
}
