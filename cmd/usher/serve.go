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
	"syscall"
	"time"

	"connectrpc.com/connect"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/usher-dev/usher/extauthz"
	"github.com/usher-dev/usher/httpapi"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

const (
	shutdownGrace = 10 * time.Second
	reloadWait    = 15 * time.Second
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
	cfg, err := service.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if cfg.ExtAuthz.Kind != 0 {
		if _, err := extauthz.FromYAML(&cfg.ExtAuthz); err != nil {
			return fmt.Errorf("usher: config %s: %w", *cfgPath, err)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
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
	return serve(ctx, serveOptions{cfg: cfg, path: *cfgPath, log: log, reload: reload})
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: want debug, info, warn or error", level)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

type serveOptions struct {
	cfg    *service.Config
	path   string // the config file, re-read on reload; "" for usher dev
	log    *slog.Logger
	ready  func(addr string) // told the gRPC address once the listener is open
	reload <-chan struct{}   // a value asks for the config file to be re-read

	metrics *service.Metrics // made by serve, shared by reloaded validators
}

// serve runs usher until ctx is done, then stops gracefully.
func serve(ctx context.Context, o serveOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cfg, log := o.cfg, o.log
	// Metrics are collected only when something can read them.
	var reg *prometheus.Registry
	if cfg.MetricsListen != "" {
		reg = prometheus.NewRegistry()
		o.metrics = service.NewMetrics(reg)
	}
	vctx, vcancel := context.WithCancel(ctx)
	v, err := service.NewValidator(vctx, cfg, service.WithLogger(log), service.WithMetrics(o.metrics))
	if err != nil {
		vcancel()
		return err
	}
	opts := []grpc.ServerOption{
		// Calls run on a pool of goroutines whose stacks have already grown,
		// instead of a new goroutine (and stack growth) per call.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.MaxRecvMsgSize(service.MaxRecvMsgSize(cfg)),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		// The client library pings every 30s; allow it, refuse faster pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
		// MaxConnectionAge makes clients re-resolve, so new replicas get calls.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 15 * time.Minute, MaxConnectionAge: 10 * time.Minute,
			MaxConnectionAgeGrace: 30 * time.Second, Time: time.Minute, Timeout: 20 * time.Second}),
	}
	var tc *tls.Config
	if cfg.TLS != nil {
		if tc, err = service.ServerTLS(cfg.TLS, func(err error) { log.Error("tls reload failed", "err", err) }); err != nil {
			vcancel()
			return err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	} else if cfg.InsecurePlaintext {
		log.Warn("serving plaintext gRPC on a non-loopback address (insecure_plaintext: true): tokens cross the network in clear unless something else encrypts", "listen", cfg.Listen)
	}
	if cfg.Tracing != nil {
		opt, stop, err := tracingOption(ctx, cfg.Tracing)
		if err != nil {
			vcancel()
			return err
		}
		defer stop()
		opts = append(opts, opt)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		vcancel()
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}

	limit := service.LimitInFlight(cfg.MaxInFlight) // shared by gRPC and HTTP/JSON
	var metrics *grpcprom.ServerMetrics
	if reg != nil {
		metrics = grpcprom.NewServerMetrics()
		reg.MustRegister(metrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		opts = append(opts,
			grpc.ChainUnaryInterceptor(metrics.UnaryServerInterceptor(), limit),
			grpc.ChainStreamInterceptor(metrics.StreamServerInterceptor()))
	} else {
		opts = append(opts, grpc.ChainUnaryInterceptor(limit))
	}
	gs := grpc.NewServer(opts...)
	srv := service.Register(ctx, gs, v, log)
	if cfg.ExtAuthz.Kind != 0 {
		ec, err := extauthz.FromYAML(&cfg.ExtAuthz)
		if err == nil {
			var ea *extauthz.Server
			if ea, err = extauthz.New(srv, *ec, log); err == nil {
				ea.Register(gs)
			}
		}
		if err != nil {
			lis.Close()
			vcancel()
			return err
		}
		log.Info("serving envoy.service.auth.v3.Authorization", "routes", len(ec.Routes))
	}
	if reg != nil {
		metrics.InitializeMetrics(gs)
		reg.MustRegister(service.StatusCollector(srv.Current))
	}

	errc := make(chan error, 3)
	var httpServers []*http.Server
	startHTTP := func(key, addr string, h http.Handler, hs *http.Server, tlsConf *tls.Config) error {
		hl, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s %s: %w", key, addr, err)
		}
		if hs == nil {
			hs = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		}
		if tlsConf != nil {
			hs.TLSConfig = tlsConf
			hl = tls.NewListener(hl, tlsConf)
		}
		httpServers = append(httpServers, hs)
		go func() {
			if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", key, err)
			}
		}()
		log.Info(key+" listening", "addr", hl.Addr().String())
		return nil
	}
	if cfg.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if cfg.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		if err := startHTTP("metrics", cfg.MetricsListen, mux, nil, nil); err != nil {
			lis.Close()
			vcancel()
			return err
		}
	}
	if cfg.HTTPListen != "" {
		h := httpapi.Handler(intercepted{srv, limit}, connect.WithReadMaxBytes(service.MaxRecvMsgSize(cfg)))
		if err := startHTTP("http_listen", cfg.HTTPListen, nil, httpapi.NewServer(cfg.HTTPListen, h), tc); err != nil {
			lis.Close()
			vcancel()
			return err
		}
	}
	go func() { errc <- gs.Serve(lis) }()
	log.Info("usher listening", "addr", lis.Addr().String(), "issuers", len(cfg.Issuers), "tls", cfg.TLS != nil)
	if o.ready != nil {
		o.ready(lis.Addr().String())
	}

	for done := false; !done; {
		select {
		case err := <-errc:
			gs.Stop()
			vcancel()
			return err
		case <-ctx.Done():
			done = true
		case <-o.reload:
			if next := reloadConfig(ctx, o, cfg, srv); next != nil {
				old := vcancel
				vcancel = next
				// Calls in flight on the old validator finish within MaxCallTime.
				time.AfterFunc(service.MaxCallTime, old)
			}
		}
	}
	log.Info("shutting down: finishing in-flight calls", "grace", shutdownGrace)
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(shutdownGrace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		log.Warn("grace period over: closing remaining connections")
		gs.Stop()
	}
	vcancel()
	for _, hs := range httpServers {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		_ = hs.Shutdown(sctx)
		scancel()
	}
	return nil
}

// reloadConfig re-reads the config file and, when it is valid and its keys
// were tried, swaps the new validator in (issuers and audiences). A bad file
// is refused and the running config kept. It returns the new validator's
// cancel, or nil when nothing changed.
func reloadConfig(ctx context.Context, o serveOptions, running *service.Config, srv *service.Server) context.CancelFunc {
	log := o.log
	if o.path == "" {
		log.Warn("reload asked, but this usher has no config file")
		return nil
	}
	cfg, err := service.LoadConfig(o.path)
	if err != nil {
		log.Error("reload refused: keeping the running config", "err", err)
		return nil
	}
	if cfg.Listen != running.Listen || cfg.MetricsListen != running.MetricsListen || cfg.HTTPListen != running.HTTPListen || cfg.Pprof != running.Pprof || cfg.ExtAuthz.Kind != 0 || running.ExtAuthz.Kind != 0 || (cfg.TLS == nil) != (running.TLS == nil) ||
		cfg.MaxInFlight != running.MaxInFlight || cfg.MaxConcurrentStreams != running.MaxConcurrentStreams || cfg.MaxTokenBytes != running.MaxTokenBytes {
		log.Warn("reload: listeners, tls, limits and ext_authz routes are applied at start only; restart usher to change them")
	}
	vctx, vcancel := context.WithCancel(ctx)
	v, err := service.NewValidator(vctx, cfg, service.WithLogger(log), service.WithMetrics(o.metrics))
	if err != nil {
		vcancel()
		log.Error("reload refused: keeping the running config", "err", err)
		return nil
	}
	wctx, wcancel := context.WithTimeout(ctx, reloadWait)
	defer wcancel()
	if err := v.WaitTried(wctx); err != nil {
		vcancel()
		log.Error("reload refused: the new issuers' keys were not tried in time; keeping the running config", "err", err)
		return nil
	}
	srv.Swap(v)
	log.Info("config reloaded", "issuers", len(cfg.Issuers), "audiences", len(cfg.Audiences))
	return vcancel
}

// intercepted runs a gRPC unary interceptor around another front end's calls
// (HTTP/JSON), so that every front end shares one in-flight limit.
type intercepted struct {
	usherv1.TokenServiceServer
	ic grpc.UnaryServerInterceptor
}

func interceptCall[Req, Resp any](ctx context.Context, ic grpc.UnaryServerInterceptor, method string, req *Req, call func(context.Context, *Req) (*Resp, error)) (*Resp, error) {
	out, err := ic(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, r any) (any, error) {
		return call(ctx, r.(*Req))
	})
	if err != nil {
		return nil, err
	}
	return out.(*Resp), nil
}

func (s intercepted) ValidateToken(ctx context.Context, req *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
	return interceptCall(ctx, s.ic, usherv1.TokenService_ValidateToken_FullMethodName, req, s.TokenServiceServer.ValidateToken)
}

func (s intercepted) InspectToken(ctx context.Context, req *usherv1.InspectTokenRequest) (*usherv1.InspectTokenResponse, error) {
	return interceptCall(ctx, s.ic, usherv1.TokenService_InspectToken_FullMethodName, req, s.TokenServiceServer.InspectToken)
}

func (s intercepted) ListIssuers(ctx context.Context, req *usherv1.ListIssuersRequest) (*usherv1.ListIssuersResponse, error) {
	return interceptCall(ctx, s.ic, usherv1.TokenService_ListIssuers_FullMethodName, req, s.TokenServiceServer.ListIssuers)
}
