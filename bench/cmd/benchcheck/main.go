// Command benchcheck is the glue of bench/run.sh, so that the script needs
// neither jq nor python:
//
//	benchcheck wait -addr A [-timeout 15s] [-service S]
//	    waits until A's grpc.health.v1 reports S SERVING ("" for the server)
//	benchcheck verdicts -addr A -expect expected.json FILE...
//	    sends every entry of each ghz data file once and checks each verdict
//	    against the reason expected.json gives for it
//	benchcheck ghz REPORT.json
//	    prints a ghz JSON report as one tab-separated line: requests, RPS,
//	    p50 ms, p99 ms, status distribution, errors
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "wait":
		err = wait(os.Args[2:])
	case "verdicts":
		err = verdicts(os.Args[2:], os.Stdout)
	case "ghz":
		err = ghz(os.Args[2:], os.Stdout)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchcheck %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchcheck wait|verdicts|ghz ... (see the package documentation)")
	os.Exit(2)
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// wait polls the health service until it reports SERVING or the timeout.
func wait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	addr := fs.String("addr", "", "host:port")
	timeout := fs.Duration("timeout", 15*time.Second, "give up after this long")
	service := fs.String("service", "usher.v1.TokenService", "health service name; \"\" for the whole server")
	_ = fs.Parse(args)
	conn, err := dial(*addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	last := errors.New("no answer")
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{Service: *service})
		ccancel()
		switch {
		case err != nil:
			last = err
		case resp.GetStatus() == healthpb.HealthCheckResponse_SERVING:
			return nil
		default:
			last = fmt.Errorf("health of %q is %s", *service, resp.GetStatus())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not serving after %s: %w", *addr, *timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// request is one entry of a ghz data file.
type request struct {
	Token            string `json:"token"`
	ExpectedAudience string `json:"expected_audience"`
}

// verdicts checks that usher answers each data file's entries as expected.
func verdicts(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("verdicts", flag.ExitOnError)
	addr := fs.String("addr", "", "host:port of usher")
	expectPath := fs.String("expect", "", "expected.json written by benchtokens")
	workers := fs.Int("c", 8, "concurrent calls")
	timeout := fs.Duration("timeout", 5*time.Minute, "deadline of the whole check")
	_ = fs.Parse(args)
	var expect map[string][]string
	if err := readJSON(*expectPath, &expect); err != nil {
		return err
	}
	conn, err := dial(*addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	tc := usherv1.NewTokenServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var failed []string
	for _, path := range fs.Args() {
		var reqs []request
		if err := readJSON(path, &reqs); err != nil {
			return err
		}
		want, ok := expect[filepath.Base(path)]
		if !ok || len(want) != len(reqs) {
			return fmt.Errorf("%s: %s has no expectation of %d entries", path, *expectPath, len(reqs))
		}
		got := make([]string, len(reqs))
		var wg sync.WaitGroup
		for wk := range max(*workers, 1) {
			wg.Go(func() {
				for i := wk; i < len(reqs); i += max(*workers, 1) {
					resp, err := tc.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: reqs[i].Token, ExpectedAudience: reqs[i].ExpectedAudience})
					if err != nil {
						got[i] = "error: " + err.Error()
					} else {
						got[i] = resp.GetReason().String()
					}
				}
			})
		}
		wg.Wait()
		counts := map[string]int{}
		var wrong []string
		for i := range got {
			counts[got[i]]++
			if got[i] != want[i] {
				wrong = append(wrong, fmt.Sprintf("entry %d: got %s, want %s", i, got[i], want[i]))
			}
		}
		verdict := "ok"
		if len(wrong) > 0 {
			verdict = fmt.Sprintf("%d WRONG (e.g. %s)", len(wrong), strings.Join(wrong[:min(3, len(wrong))], "; "))
			failed = append(failed, filepath.Base(path))
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", filepath.Base(path), len(reqs), distribution(counts), verdict)
	}
	if len(failed) > 0 {
		return fmt.Errorf("unexpected verdicts in %s", strings.Join(failed, ", "))
	}
	return nil
}

// report is the part of ghz's JSON report (-O json) that the table shows.
type report struct {
	Count     int            `json:"count"`
	RPS       float64        `json:"rps"`
	EndReason string         `json:"endReason"`
	Errors    map[string]int `json:"errorDistribution"`
	Statuses  map[string]int `json:"statusCodeDistribution"`
	Latencies []latency      `json:"latencyDistribution"`
}

type latency struct {
	Percentage int   `json:"percentage"`
	Latency    int64 `json:"latency"` // nanoseconds
}

// ghz prints: requests, RPS, p50 ms, p99 ms, statuses, errors, end reason.
func ghz(args []string, w io.Writer) error {
	if len(args) != 1 {
		return errors.New("want one ghz JSON report")
	}
	var r report
	if err := readJSON(args[0], &r); err != nil {
		return err
	}
	pct := func(p int) string {
		for _, l := range r.Latencies {
			if l.Percentage == p {
				return fmt.Sprintf("%.3f", float64(l.Latency)/1e6)
			}
		}
		return "n/a"
	}
	errs := 0
	for _, n := range r.Errors {
		errs += n
	}
	fmt.Fprintf(w, "%d\t%.0f\t%s\t%s\t%s\t%d\t%s\n", r.Count, r.RPS, pct(50), pct(99), distribution(r.Statuses), errs, r.EndReason)
	return nil
}

// distribution renders counts as "A 3, B 1", largest first.
func distribution(counts map[string]int) string {
	keys := slices.Collect(maps.Keys(counts))
	slices.SortFunc(keys, func(a, b string) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, counts[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
