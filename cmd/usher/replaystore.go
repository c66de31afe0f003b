package main

import (
	"context"
	"time"

	"github.com/usher-dev/usher/internal/replaystore"
)

// replayStoreDownMsg is logged once when the shared replay store stops
// answering, so that an engineer sees why DPoP calls fail.
const replayStoreDownMsg = "dpop replay store not answering: DPoP-bound tokens are answered UNAVAILABLE (fail closed) until it does; bearer tokens are unaffected; check that Redis at dpop.replay_store is up and reachable"

// startReplayStore builds the store of dpop.replay_store, if any, and says
// whether it answers. usher starts either way: readiness does not depend on
// the store, and tokens that are not DPoP-bound never ask it.
func (s *server) startReplayStore(ctx context.Context) error {
	store, err := s.newReplayStore(s.cfg.ReplayStore)
	if err != nil {
		return err
	}
	s.replay, s.replayURL = store, s.cfg.ReplayStore
	// Reads s.replay when it runs: the store a reload put in service.
	s.onClose(func() { closeReplayStore(s.replay) })
	if store == nil {
		return nil
	}
	if err := store.Ping(ctx); err != nil {
		s.replayDown.Store(true)
		s.log.Warn(replayStoreDownMsg, "store", store.Redacted(), "err", err)
	}
	return nil
}

// newReplayStore is the store at url, nil for "" (in memory, per replica).
// Nothing is dialled yet.
func (s *server) newReplayStore(url string) (*replaystore.Redis, error) {
	if url == "" {
		return nil, nil
	}
	return replaystore.New(url, replaystore.WithObserver(s.observeReplayStore))
}

// observeReplayStore exports each call to the store and logs when it stops
// and starts answering: one line per change, not one per call.
func (s *server) observeReplayStore(took time.Duration, err error) {
	if s.replayMet != nil {
		s.replayMet.Observe(took, err)
	}
	switch {
	case err != nil && !s.replayDown.Swap(true):
		s.log.Error(replayStoreDownMsg, "err", err)
	case err == nil && s.replayDown.Swap(false):
		s.log.Info("dpop replay store answering again: DPoP-bound tokens are checked again")
	}
}

// replayStoreName is the store for logs: its URL redacted, or "memory".
func replayStoreName(store *replaystore.Redis) string {
	if store == nil {
		return "memory (per replica)"
	}
	return store.Redacted()
}

func closeReplayStore(store *replaystore.Redis) {
	if store != nil {
		_ = store.Close()
	}
}
