package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/replaystore"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// errChecksFailed: usher doctor found a problem (exit 1, the checklist says which).
var errChecksFailed = errors.New("checks failed")

func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usher doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "check this config: the files it names, and its issuers for real")
	var cf clientFlags
	cf.registerConn(fs, "check a running usher at this address instead")
	fs.BoolVar(&cf.json, "json", false, "print the report as JSON: target, ok, problems, and checks (subject, name, ok, detail, fix)")
	fs.DurationVar(&cf.timeout, "timeout", 15*time.Second, "deadline of all checks")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		if err := cf.resolve(""); err != nil { // USHER_ADDR stands in for --addr
			return err
		}
		if _, err := cf.dialOption(cf.addr); cf.addr != "" && err != nil { // a CA or client certificate file that cannot be used
			return err
		}
	}
	if (*cfgPath == "") == (cf.addr == "") {
		return usageError{"doctor: give either --config FILE or --addr HOST:PORT (or " + envAddr + ")"}
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	var target string
	var checks []service.Check
	if *cfgPath != "" {
		target, checks = *cfgPath, configChecks(ctx, *cfgPath)
	} else {
		target, checks = "usher at "+cf.addr, remoteChecks(ctx, &cf)
	}
	var failed int
	if cf.json {
		var err error
		if failed, err = printChecksJSON(stdout, target, checks); err != nil {
			return err
		}
	} else {
		failed = printChecklist(stdout, "usher doctor: "+target, checks, colorOn(stdout))
	}
	if failed > 0 {
		return errChecksFailed
	}
	return nil
}

// configChecks loads the config at path and checks it: the TLS files it
// names, then its issuers and audiences for real, then the replay store.
func configChecks(ctx context.Context, path string) []service.Check {
	cfg, err := config.Load(path)
	if err != nil {
		return []service.Check{{Subject: "config", Name: "config valid", Detail: strings.ReplaceAll(err.Error(), "\n", "; "),
			Fix: "correct the keys named above (see the README's configuration reference)"}}
	}
	checks := []service.Check{{Subject: "config", Name: "config valid", OK: true, Detail: fmt.Sprintf("%d issuers, %d audiences", len(cfg.Engine.Issuers), len(cfg.Engine.Audiences))}}
	if cfg.TLS != nil {
		checks = append(checks, tlsChecks(cfg.TLS, time.Now())...)
	}
	checks = append(checks, service.Diagnose(ctx, &cfg.Engine)...)
	if cfg.ReplayStore != "" {
		checks = append(checks, replayStoreCheck(ctx, cfg.ReplayStore))
	}
	return checks
}

// remoteChecks asks a running usher what it believes: health, and each
// issuer's keys and last fetch.
func remoteChecks(ctx context.Context, cf *clientFlags) []service.Check {
	var checks []service.Check
	subject := "usher " + cf.addr
	err := cf.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
		list, err := usherv1.NewTokenServiceClient(conn).ListIssuers(ctx, &usherv1.ListIssuersRequest{})
		if err != nil {
			return err
		}
		checks = append(checks, service.Check{Subject: subject, Name: "reachable", OK: true, Detail: fmt.Sprintf("%d issuers", len(list.GetIssuers()))})
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "usher.v1.TokenService"})
		health := service.Check{Subject: subject, Name: "health SERVING", OK: err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING,
			Detail: resp.GetStatus().String(), Fix: "usher answers NOT_SERVING until every issuer's keys were tried once, and while no issuer holds keys; see the issuers below"}
		if err != nil {
			health.Detail = err.Error()
		}
		checks = append(checks, health)
		for _, is := range list.GetIssuers() {
			checks = append(checks, issuerChecks(is, time.Now())...)
		}
		return nil
	})
	if err != nil {
		c := service.Check{Subject: subject, Name: "reachable", Detail: err.Error(),
			Fix: "start usher (`usher serve --config FILE` or `usher dev`) or point --addr at it"}
		if ce := (*callError)(nil); errors.As(err, &ce) {
			c.Detail = ce.err.Error()
			if ce.fix != "" {
				c.Detail, c.Fix = "dialled "+ce.how+": "+c.Detail, ce.fix
			}
		}
		return []service.Check{c}
	}
	return checks
}

func issuerChecks(is *usherv1.IssuerStatus, now time.Time) []service.Check {
	subject := "issuer " + is.GetIssuer()
	var out []service.Check
	if ep := is.GetIntrospectionEndpoint(); ep != "" {
		c := service.Check{Subject: subject, Name: "introspection", OK: is.GetIntrospectionLastError() == "", Detail: "opaque tokens answered by " + ep}
		if !c.OK {
			c.Detail += "; last error: " + is.GetIntrospectionLastError()
			c.Fix = "check that usher can reach the endpoint and that its client_id and client_secret_file are right (`usher doctor --config`)"
		}
		out = append(out, c)
		if is.GetJwksUri() == "" && len(is.GetKeyIds()) == 0 {
			return out // an issuer of opaque tokens only holds no keys
		}
	}
	if len(is.GetKeyIds()) == 0 {
		return append(out, service.Check{Subject: subject, Name: "keys held", Detail: "none; last error: " + is.GetLastError(),
			Fix: "usher cannot fetch " + is.GetJwksUri() + ": run `usher doctor --config` with usher's config from where usher runs"})
	}
	fetched := "at " + when(is.GetLastRefresh(), now)
	out = append(out, service.Check{Subject: subject, Name: "keys held", OK: true, Detail: strings.Join(is.GetKeyIds(), ", ") + " fetched " + fetched + " from " + is.GetJwksUri()})
	if e := is.GetLastError(); e != "" {
		out = append(out, service.Check{Subject: subject, Name: "latest fetch", Detail: e,
			Fix: "usher still serves the last good set; check that the issuer's key set is reachable from usher"})
	}
	return out
}

// printChecklist prints checks grouped by subject and returns how many
// failed. Every string is printable()'d: issuers, key sets, a running
// usher and the config all speak in it.
func printChecklist(w io.Writer, title string, checks []service.Check, color bool) int {
	fmt.Fprintln(w, printable(title))
	failed, subject := 0, ""
	for _, c := range checks {
		if c.Subject != subject {
			subject = c.Subject
			fmt.Fprintf(w, "\n%s\n", printable(subject))
		}
		mark := paint(color, green, "✓")
		if !c.OK {
			mark = paint(color, red, "✗")
			failed++
		}
		fmt.Fprintf(w, "  %s %s: %s\n", mark, printable(c.Name), printable(c.Detail))
		if !c.OK && c.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", printable(c.Fix))
		}
	}
	switch failed {
	case 0:
		fmt.Fprintln(w, "\nAll checks passed.")
	case 1:
		fmt.Fprintln(w, "\n1 problem found.")
	default:
		fmt.Fprintf(w, "\n%d problems found.\n", failed)
	}
	return failed
}

// replayStoreCheck asks the shared DPoP replay store for real (PING).
func replayStoreCheck(ctx context.Context, url string) service.Check {
	c := service.Check{Subject: "dpop", Name: "replay store answers"}
	store, err := replaystore.New(url)
	if err != nil {
		c.Detail, c.Fix = err.Error(), "correct dpop.replay_store: redis://[:password@]host:6379/0, or rediss:// for TLS"
		return c
	}
	defer store.Close()
	c.Detail = store.Redacted()
	if err := store.Ping(ctx); err != nil {
		c.Detail += ": " + err.Error()
		c.Fix = "start Redis or Valkey there, or make it reachable from usher; until it answers, DPoP-bound tokens get UNAVAILABLE (bearer tokens are unaffected)"
		return c
	}
	c.OK = true
	return c
}
