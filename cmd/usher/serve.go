package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/KimMachineGun/automemlimit/memlimit"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/usher-dev/usher/extauthz"
	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/httpapi"
	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/console"
	"github.com/usher-dev/usher/internal/metrics"
	"github.com/usher-dev/usher/internal/replaystore"
	"github.com/usher-dev/usher/internal/servertls"
	"github.com/usher-dev/usher/service"
)

const (
	shutdownGrace = 10 * time.Second
	reloadWait    = 15 * time.Second
	// extauthzLogMsg is the message of ext_authz's per-request lines.
	extauthzLogMsg = "ext_authz check"
)

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("usher serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML configuration file (required); re-read on SIGHUP")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return usageError{"serve: --config FILE is required (or run `usher dev` for the zero-config default)"}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	replaystore.SetLogger(log) // once per process: go-redis has one logger
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	defer setMemoryLimit(log, memlimit.FromCgroup)()
	return serve(ctx, serveOptions{cfg: cfg, path: *cfgPath, log: log, reload: hangups(ctx)})
}

// hangups turns SIGHUP into reload requests until ctx is done; requests that
// arrive while one is pending are merged.
func hangups(ctx context.Context) <-chan struct{} {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				select {
				case reload <- struct{}{}:
				default:
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return reload
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: want debug, info, warn or error", level)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

type serveOptions struct {
	cfg    *config.Config // validated
	path   string         // the config file, re-read on reload; "" for usher dev
	log    *slog.Logger
	ready  func(addr string) // told the gRPC address once the listener is open
	reload <-chan struct{}   // a value asks for the config file to be re-read

	engineOpts []service.Option // added to every validator's options (tests)

	// listening, when set, is told each HTTP listener's key (http_listen,
	// metrics) and bound address as it opens, before ready.
	listening func(key, addr string)
}

// server is a running usher: its listeners and what they serve.
type server struct {
	serveOptions
	reg      *prometheus.Registry        // nil without metrics_listen: nothing collects
	observer *metrics.Metrics            // shared by the validators a reload creates
	recorder *console.Recorder           // the console's counts; nil without console
	tls      *tls.Config                 // nil without tls
	limit    grpc.UnaryServerInterceptor // the in-flight limit every front end shares
	grpcMet  *grpcprom.ServerMetrics     // nil without metrics_listen
	api      *grpcapi.Server
	gs       *grpc.Server
	lis      net.Listener
	vcancel  context.CancelFunc // ends the validator in service's key fetching
	errc     chan error         // a listener that failed
	closers  []func()           // run last to first when serve returns
	// flushLogs write the sampled logs' last counts, once calls stopped.
	flushLogs []func(context.Context)

	// replay is the shared DPoP replay store the validator in service uses
	// (nil: in memory, per validator); replayURL is its dpop.replay_store.
	replay     *replaystore.Redis
	replayURL  string
	replayMet  *metrics.ReplayStore // nil without metrics_listen
	replayDown atomic.Bool          // the store's last call failed: logged once an outage
}

// serve runs usher until ctx is done, then stops gracefully. Whatever it
// started is stopped on one path, on success and on error alike.
func serve(ctx context.Context, o serveOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &server{serveOptions: o, errc: make(chan error, 3)}
	defer s.close()
	if err := s.start(ctx); err != nil {
		return err
	}
	return s.run(ctx)
}

func (s *server) onClose(f func()) { s.closers = append(s.closers, f) }

func (s *server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// start opens every listener and starts serving.
func (s *server) start(ctx context.Context) error {
	if s.cfg.MetricsListen != "" {
		s.reg = prometheus.NewRegistry()
		s.observer = metrics.New(s.reg)
		s.replayMet = metrics.NewReplayStore(s.reg)
	}
	if s.cfg.Console {
		s.recorder = console.NewRecorder(nil)
	}
	if err := s.startReplayStore(ctx); err != nil {
		return err
	}
	v, err := s.newValidator(ctx, &s.cfg.Engine, s.replay)
	if err != nil {
		return err
	}
	s.vcancel = v.cancel
	s.onClose(func() { s.vcancel() })
	opts, err := s.grpcOptions(ctx)
	if err != nil {
		return err
	}
	if s.lis, err = s.listen("listen", s.cfg.Listen); err != nil {
		return err
	}
	// gs.Stop closes the listener only once gs.Serve has it: a start that
	// fails before then must close it itself.
	s.onClose(func() { _ = s.lis.Close() })
	// Closers run last to first: the sampled logs' last counts are written
	// once the server stopped.
	s.onClose(func() {
		for _, flush := range s.flushLogs {
			flush(context.WithoutCancel(ctx))
		}
	})
	s.gs = grpc.NewServer(opts...)
	s.onClose(s.gs.Stop)
	s.api = grpcapi.Register(ctx, s.gs, v.Validator, s.log)
	s.flushLogs = append(s.flushLogs, s.api.FlushLog)
	if err := s.registerExtAuthz(ctx); err != nil {
		return err
	}
	if err := s.startHTTP(); err != nil {
		return err
	}
	go func() { s.errc <- s.gs.Serve(s.lis) }()
	s.log.Info("usher listening", "addr", s.lis.Addr().String(), "issuers", len(s.cfg.Engine.Issuers), "tls", s.cfg.TLS != nil,
		"dpop_replay_store", replayStoreName(s.replay))
	if s.ready != nil {
		s.ready(s.lis.Addr().String())
	}
	return nil
}

// listen opens a TCP listener that holds at most max_connections
// connections: beyond them, new ones wait in the kernel's accept queue.
func (s *server) listen(key, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", key, addr, err)
	}
	return netutil.LimitListener(l, s.cfg.MaxConnections), nil
}

// validator is a validator in service and the cancel that ends its key
// fetching.
type validator struct {
	*service.Validator
	cancel context.CancelFunc
}

// newValidator makes a validator of cfg whose DPoP proofs are remembered in
// store (nil: in memory, its own).
func (s *server) newValidator(ctx context.Context, cfg *service.Config, store *replaystore.Redis, extra ...service.Option) (validator, error) {
	vctx, cancel := context.WithCancel(ctx)
	opts := []service.Option{
		service.WithLogger(s.log),
		// One issuer's callers may hold at most an eighth of the in-flight
		// budget while they wait for its key set.
		service.WithKeyWait(0, max(1, s.cfg.MaxInFlight/8)),
	}
	if obs := s.engineObserver(); obs != nil {
		opts = append(opts, service.WithObserver(obs))
	}
	if store != nil {
		opts = append(opts, service.WithReplayStore(store))
	}
	opts = append(append(opts, s.engineOpts...), extra...)
	v, err := service.NewValidator(vctx, cfg, opts...)
	if err != nil {
		cancel()
		return validator{}, err
	}
	return validator{v, cancel}, nil
}

// streamWorkers is the size of grpc's pool of call goroutines. grpc hands a
// call to an idle worker, or else starts a goroutine for it, whose stack
// then grows on the way through grpc and usher (runtime.newstack). One read
// of the connection brings many calls at once, so a pool of one worker per
// CPU left most of them on new goroutines: under ghz -c 50 on one CPU,
// runtime.newstack took 11-16 % of usher's CPU with 1 worker and 2-7 % with
// 64 (CPU profiles under ghz, as bench/run.sh PROFILE=1 takes them). An
// idle worker costs its stack, a few KiB.
func streamWorkers(procs int) uint32 {
	return uint32(max(64, 8*procs))
}

// engineObserver is told about every verdict: the metrics, the console's
// recorder, both, or nil.
func (s *server) engineObserver() service.Observer {
	var next service.Observer
	if s.observer != nil {
		next = s.observer
	}
	if s.recorder != nil {
		return s.recorder.Observer(next)
	}
	return next
}

// grpcOptions are the gRPC server's limits, credentials, tracing and
// interceptors (metrics, then the in-flight and stream limits).
func (s *server) grpcOptions(ctx context.Context) ([]grpc.ServerOption, error) {
	cfg := s.cfg
	opts := []grpc.ServerOption{
		// Calls run on a pool of goroutines whose stacks have already grown,
		// instead of a new goroutine (and stack growth) per call.
		grpc.NumStreamWorkers(streamWorkers(runtime.GOMAXPROCS(0))),
		grpc.MaxRecvMsgSize(grpcapi.MaxRecvMsgSize(cfg.Engine.MaxTokenBytes)),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		// The client library pings every 30s; allow it, refuse faster pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
		// MaxConnectionAge makes clients re-resolve, so new replicas get calls.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 15 * time.Minute, MaxConnectionAge: 10 * time.Minute,
			MaxConnectionAgeGrace: 30 * time.Second, Time: time.Minute, Timeout: 20 * time.Second}),
	}
	if cfg.TLS != nil {
		tc, err := servertls.Config(servertls.Files(*cfg.TLS), func(err error) { s.log.Error("tls reload failed", "err", err) })
		if err != nil {
			return nil, err
		}
		s.tls = tc
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	} else if cfg.InsecurePlaintext {
		s.log.Warn("serving plaintext on a non-loopback address (insecure_plaintext: true): tokens cross the network in clear unless something else encrypts", "listen", cfg.Listen)
	}
	if cfg.Tracing != nil {
		opt, stop, err := tracingOption(ctx, cfg.Tracing)
		if err != nil {
			return nil, err
		}
		s.onClose(stop)
		opts = append(opts, opt)
	}
	s.limit = grpcapi.LimitInFlight(cfg.MaxInFlight)
	streams := grpcapi.LimitStreams(cfg.MaxStreams)
	if s.reg == nil {
		return append(opts, grpc.ChainUnaryInterceptor(s.limit), grpc.ChainStreamInterceptor(streams)), nil
	}
	s.grpcMet = grpcprom.NewServerMetrics()
	s.reg.MustRegister(s.grpcMet, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return append(opts,
		grpc.ChainUnaryInterceptor(s.grpcMet.UnaryServerInterceptor(), s.limit),
		grpc.ChainStreamInterceptor(s.grpcMet.StreamServerInterceptor(), streams)), nil
}

// registerExtAuthz serves ext_authz when configured. Its per-request
// decision lines are sampled as the TokenService's are: a flood of bad
// tokens through Envoy writes a bounded number of lines.
func (s *server) registerExtAuthz(ctx context.Context) error {
	if s.cfg.ExtAuthz == nil {
		return nil
	}
	sampler := grpcapi.NewLogSampler(s.log.Handler(), nil, extauthzLogMsg)
	ea, err := extauthz.New(s.api, *s.cfg.ExtAuthz, slog.New(sampler))
	if err != nil {
		return err
	}
	ticker := time.NewTicker(time.Second)
	s.onClose(ticker.Stop)
	go sampler.Run(ctx, ticker.C)
	s.flushLogs = append(s.flushLogs, sampler.FlushAll)
	ea.Register(s.gs)
	s.log.Info("serving envoy.service.auth.v3.Authorization", "routes", len(s.cfg.ExtAuthz.Routes))
	return nil
}

// startHTTP opens the metrics and HTTP/JSON listeners that are configured.
func (s *server) startHTTP() error {
	if s.cfg.MetricsListen != "" {
		// With tls, metrics (and pprof) are served over it too, like every listener.
		if err := s.listenHTTP("metrics", s.cfg.MetricsListen, &http.Server{Handler: s.metricsHandler(), ReadHeaderTimeout: 5 * time.Second}, s.tls); err != nil {
			return err
		}
	}
	if s.cfg.HTTPListen != "" {
		// The in-flight limit is gRPC's: one budget for every front end.
		h := httpapi.Handler(grpcapi.Intercepted(s.api, s.limit), connect.WithReadMaxBytes(grpcapi.MaxRecvMsgSize(s.cfg.Engine.MaxTokenBytes)))
		if s.cfg.Console {
			h = s.withConsole(h)
		}
		if err := s.listenHTTP("http_listen", s.cfg.HTTPListen, httpapi.NewServer(s.cfg.HTTPListen, h), s.tls); err != nil {
			return err
		}
	}
	return nil
}

// withConsole serves the console under /console/ beside the HTTP/JSON API,
// on the same listener and so with the same TLS.
func (s *server) withConsole(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, console.Handler(console.Options{
		APIs:         func() []service.KnownAudience { return s.api.Current().Audiences() },
		Recorder:     s.recorder,
		LoopbackHost: listensOnLoopback(s.cfg.HTTPListen),
	}))
	mux.Handle("/", api)
	return mux
}

// listensOnLoopback reports whether a listen address is a loopback one.
func listensOnLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && config.IsLoopback(host)
}

// metricsHandler serves /metrics (and pprof when asked) from the registry.
// It runs once every gRPC service is registered, so that each one's metrics
// start at zero.
func (s *server) metricsHandler() http.Handler {
	s.grpcMet.InitializeMetrics(s.gs)
	s.reg.MustRegister(metrics.StatusCollector(s.api.Current))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (s *server) listenHTTP(key, addr string, hs *http.Server, tlsConf *tls.Config) error {
	hl, err := s.listen(key, addr)
	if err != nil {
		return err
	}
	if tlsConf != nil {
		hs.TLSConfig = tlsConf
		hl = tls.NewListener(hl, tlsConf)
	}
	s.onClose(func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		_ = hs.Close()
		_ = hl.Close() // Serve may not have taken it yet
	})
	go func() {
		if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("%s: %w", key, err)
		}
	}()
	s.log.Info(key+" listening", "addr", hl.Addr().String())
	if s.listening != nil {
		s.listening(key, hl.Addr().String())
	}
	return nil
}

// run serves until ctx is done or a listener fails, reloading on request.
func (s *server) run(ctx context.Context) error {
	for {
		select {
		case err := <-s.errc:
			return err
		case <-ctx.Done():
			s.gracefulStop()
			return nil
		case <-s.reload:
			s.reloadConfig(ctx)
		}
	}
}

// gracefulStop lets calls in flight finish for up to shutdownGrace, then
// closes what remains (grpc-go's examples/features/gracefulstop).
func (s *server) gracefulStop() {
	s.log.Info("shutting down: finishing in-flight calls", "grace", shutdownGrace)
	stopped := make(chan struct{})
	go func() {
		s.gs.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(shutdownGrace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		s.log.Warn("grace period over: closing remaining connections")
		s.gs.Stop()
	}
}
