package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/usher-dev/usher/service"
)

const shutdownGrace = 10 * time.Second

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("usher serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML configuration file (required)")
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
	return serve(ctx, cfg, log, nil)
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: want debug, info, warn or error", level)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// serve runs usher until ctx is done, then stops gracefully. ready, when
// not nil, receives the gRPC address once the listener is open.
func serve(ctx context.Context, cfg *service.Config, log *slog.Logger, ready func(addr string)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	v, err := service.NewValidator(ctx, cfg, service.WithLogger(log))
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}

	reg := prometheus.NewRegistry()
	metrics := grpcprom.NewServerMetrics()
	reg.MustRegister(metrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gs := grpc.NewServer(
		// The client library pings every 30s; allow it, refuse faster pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(metrics.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(metrics.StreamServerInterceptor()),
	)
	service.Register(ctx, gs, v, log)
	metrics.InitializeMetrics(gs)

	errc := make(chan error, 2)
	var metricsSrv *http.Server
	if cfg.MetricsListen != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			lis.Close()
			return fmt.Errorf("metrics_listen %s: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := metricsSrv.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
		log.Info("metrics listening", "addr", mlis.Addr().String())
	}
	go func() { errc <- gs.Serve(lis) }()
	log.Info("usher listening", "addr", lis.Addr().String(), "issuers", len(cfg.Issuers))
	if ready != nil {
		ready(lis.Addr().String())
	}

	select {
	case err := <-errc:
		gs.Stop()
		return err
	case <-ctx.Done():
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
	if metricsSrv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		defer scancel()
		_ = metricsSrv.Shutdown(sctx)
	}
	return nil
}
