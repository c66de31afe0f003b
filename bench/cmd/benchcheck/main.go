// Command benchcheck is the glue of bench/run.sh, so that the script needs
// neither jq nor python:
//
//	benchcheck wait -addr A [-timeout 15s] [-service S]
//	    waits until A's grpc.health.v1 reports S SERVING ("" for the server)
//	benchcheck verdicts -addr A -expect expected.json [-max K] FILE...
//	    sends every entry (or the first K) of each ghz data file once and
//	    checks each verdict against the reason expected.json gives for it
//	benchcheck response -addr A -out FILE DATA.json
//	    sends the first entry of a ghz data file and writes usher's answer,
//	    a binary ValidateTokenResponse, to FILE (for trivial -response);
//	    prints its size in bytes
//	benchcheck ghz REPORT.json
//	    prints a ghz JSON report as one tab-separated line: requests, RPS,
//	    p50 ms, p99 ms, status distribution, errors, end reason
//	benchcheck vegeta REPORT.json
//	    the same line from a `vegeta report -type=json` report
//	benchcheck targets -url URL FILE
//	    prints a ghz data file as vegeta JSON targets: one POST of
//	    {"input": {"token", "expected_audience"}} to URL per entry
//	benchcheck opa -url URL -expect expected.json [-max K] FILE...
//	    POSTs entries to OPA's data API and checks that the result is true
//	    exactly for the entries expected.json gives REASON_VALID
//	benchcheck flood -addr A -seed ed25519.seed -pid PID [-max 1000000] [-duration 120s] [-c 50]
//	    sends distinct EdDSA tokens, signed on the fly, until -max or
//	    -duration, sampling the VmRSS of process PID every second: prints
//	    "sample<TAB>seconds<TAB>tokens sent<TAB>VmRSS kB" lines and a last
//	    "done<TAB>sent<TAB>valid<TAB>other verdicts<TAB>errors<TAB>seconds<TAB>VmRSS kB<TAB>VmHWM kB"
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/usher-dev/usher/bench/internal/benchjwt"
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
	case "response":
		err = response(os.Args[2:], os.Stdout)
	case "ghz":
		err = ghz(os.Args[2:], os.Stdout)
	case "vegeta":
		err = vegeta(os.Args[2:], os.Stdout)
	case "targets":
		err = targets(os.Args[2:], os.Stdout)
	case "opa":
		err = opa(os.Args[2:], os.Stdout)
	case "flood":
		err = flood(os.Args[2:], os.Stdout)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchcheck %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchcheck wait|verdicts|response|ghz|vegeta|targets|opa|flood ... (see the package documentation)")
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
	maxEntries := fs.Int("max", 0, "check only the first K entries of each file (0: all)")
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
		reqs, want, err := entries(path, *expectPath, expect, *maxEntries)
		if err != nil {
			return err
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

// response writes usher's answer to the first entry of a data file.
func response(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("response", flag.ExitOnError)
	addr := fs.String("addr", "", "host:port of usher")
	out := fs.String("out", "", "file to write the binary ValidateTokenResponse to")
	_ = fs.Parse(args)
	if fs.NArg() != 1 || *out == "" {
		return errors.New("want -addr A -out FILE DATA.json")
	}
	var reqs []request
	if err := readJSON(fs.Arg(0), &reqs); err != nil {
		return err
	}
	if len(reqs) == 0 {
		return fmt.Errorf("%s: no entries", fs.Arg(0))
	}
	conn, err := dial(*addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := usherv1.NewTokenServiceClient(conn).ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: reqs[0].Token, ExpectedAudience: reqs[0].ExpectedAudience})
	if err != nil {
		return err
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintln(w, len(b))
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

// vegetaReport is the part of `vegeta report -type=json` that the table shows.
type vegetaReport struct {
	Latencies struct {
		P50 int64 `json:"50th"`
		P99 int64 `json:"99th"`
	} `json:"latencies"`
	Duration    int64          `json:"duration"` // ns, first to last request sent
	Wait        int64          `json:"wait"`     // ns, last request sent to its response
	Requests    int            `json:"requests"`
	StatusCodes map[string]int `json:"status_codes"`
	Errors      []string       `json:"errors"`
}

// vegeta prints the line ghz prints, from a vegeta JSON report; every
// status but 200 counts as an error (0 is a transport error).
func vegeta(args []string, w io.Writer) error {
	if len(args) != 1 {
		return errors.New("want one vegeta JSON report")
	}
	var r vegetaReport
	if err := readJSON(args[0], &r); err != nil {
		return err
	}
	rps := 0.0
	if d := r.Duration + r.Wait; d > 0 {
		rps = float64(r.Requests) / (float64(d) / 1e9)
	}
	errs := r.Requests - r.StatusCodes["200"]
	end := "normal"
	if len(r.Errors) > 0 {
		end = "errors: " + strings.Join(r.Errors[:min(3, len(r.Errors))], "; ")
	}
	fmt.Fprintf(w, "%d\t%.0f\t%.3f\t%.3f\t%s\t%d\t%s\n", r.Requests, rps, float64(r.Latencies.P50)/1e6, float64(r.Latencies.P99)/1e6,
		distribution(r.StatusCodes), errs, end)
	return nil
}

// opaInput is the body of a query of OPA's data API.
type opaInput struct {
	Input request `json:"input"`
}

// targets writes vegeta's JSON targets format, one line per data file entry.
func targets(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("targets", flag.ExitOnError)
	url := fs.String("url", "", "URL to POST each entry to")
	_ = fs.Parse(args)
	if *url == "" || fs.NArg() != 1 {
		return errors.New("want -url URL and one data file")
	}
	var reqs []request
	if err := readJSON(fs.Arg(0), &reqs); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	enc := json.NewEncoder(bw)
	header := http.Header{"Content-Type": {"application/json"}}
	for _, r := range reqs {
		body, err := json.Marshal(opaInput{r})
		if err != nil {
			return err
		}
		// vegeta's JSON target: body is base64 (encoding/json's []byte).
		if err := enc.Encode(struct {
			Method string      `json:"method"`
			URL    string      `json:"url"`
			Body   []byte      `json:"body"`
			Header http.Header `json:"header"`
		}{"POST", *url, body, header}); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// opa checks OPA's answers: allow (result true) exactly for valid tokens.
func opa(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("opa", flag.ExitOnError)
	url := fs.String("url", "", "URL of the policy decision, e.g. http://127.0.0.1:8181/v1/data/usher/bench/allow")
	expectPath := fs.String("expect", "", "expected.json written by benchtokens")
	maxEntries := fs.Int("max", 0, "check only the first K entries of each file (0: all)")
	_ = fs.Parse(args)
	var expect map[string][]string
	if err := readJSON(*expectPath, &expect); err != nil {
		return err
	}
	client := &http.Client{Timeout: 10 * time.Second}
	var failed []string
	for _, path := range fs.Args() {
		reqs, want, err := entries(path, *expectPath, expect, *maxEntries)
		if err != nil {
			return err
		}
		counts := map[string]int{}
		var wrong []string
		for i, r := range reqs {
			got, err := opaQuery(client, *url, r)
			if err != nil {
				got = "error: " + err.Error()
			}
			counts[got]++
			if exp := strconv.FormatBool(want[i] == "REASON_VALID"); got != exp {
				wrong = append(wrong, fmt.Sprintf("entry %d (%s): got %s, want %s", i, want[i], got, exp))
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
		return fmt.Errorf("OPA answered unexpectedly in %s", strings.Join(failed, ", "))
	}
	return nil
}

// opaQuery returns OPA's result for one entry: "true", "false" or, for a
// policy that defines nothing, "undefined".
func opaQuery(client *http.Client, url string, r request) (string, error) {
	body, err := json.Marshal(opaInput{r})
	if err != nil {
		return "", err
	}
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var out struct {
		Result *bool `json:"result"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", err
	}
	if out.Result == nil {
		return "undefined", nil
	}
	return strconv.FormatBool(*out.Result), nil
}

// flood sends distinct EdDSA tokens (made and signed here, each with its
// own jti) as fast as usher answers, and samples the server's memory.
func flood(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("flood", flag.ExitOnError)
	addr := fs.String("addr", "", "host:port of usher")
	seedPath := fs.String("seed", "", "ed25519.seed written by benchtokens (the key ed-1 of its JWKS)")
	pid := fs.Int("pid", 0, "server process whose VmRSS is sampled")
	maxTokens := fs.Int64("max", 1_000_000, "tokens to send at most")
	duration := fs.Duration("duration", 120*time.Second, "time to send them in at most")
	workers := fs.Int("c", 50, "concurrent calls")
	_ = fs.Parse(args)
	seedHex, err := os.ReadFile(*seedPath)
	if err != nil {
		return err
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(seedHex)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return fmt.Errorf("%s: not a hex Ed25519 seed", *seedPath)
	}
	if _, _, err := memory(*pid); err != nil {
		return err
	}
	s := benchjwt.Signer{Alg: "EdDSA", Kid: "ed-1", Priv: ed25519.NewKeyFromSeed(seed)}
	run := rand.Text()[:8]
	conn, err := dial(*addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	tc := usherv1.NewTokenServiceClient(conn)

	start := time.Now()
	f := &flooder{tc: tc, s: s, run: run, max: *maxTokens, deadline: start.Add(*duration),
		iat: start.Unix(), exp: start.Add(2 * time.Hour).Unix()}
	done := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() { f.sample(w, *pid, start, done) })
	var wg sync.WaitGroup
	for range max(*workers, 1) {
		wg.Go(f.work)
	}
	wg.Wait()
	close(done)
	sampler.Wait()
	elapsed := time.Since(start)
	rss, hwm, err := memory(*pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "done\t%d\t%d\t%d\t%d\t%.1f\t%d\t%d\n", f.sent.Load(), f.valid.Load(), f.other.Load(), f.failed.Load(), elapsed.Seconds(), rss, hwm)
	if f.firstErr != nil {
		fmt.Fprintln(os.Stderr, "benchcheck flood: first problem:", f.firstErr)
	}
	if f.failed.Load() > 0 || f.other.Load() > 0 {
		return fmt.Errorf("%d errors and %d verdicts other than VALID", f.failed.Load(), f.other.Load())
	}
	return f.firstErr
}

// flooder sends distinct tokens, signed as it goes, until max or deadline.
type flooder struct {
	tc       usherv1.TokenServiceClient
	s        benchjwt.Signer
	run      string // jti prefix: tokens of this run only
	max      int64
	deadline time.Time
	iat, exp int64

	next, sent, valid, other, failed atomic.Int64
	mu                               sync.Mutex
	firstErr                         error
}

// sample prints the server's RSS and the tokens sent, once a second.
func (f *flooder) sample(w io.Writer, pid int, start time.Time, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			rss, _, _ := memory(pid)
			fmt.Fprintf(w, "sample\t%.1f\t%d\t%d\n", now.Sub(start).Seconds(), f.sent.Load(), rss)
		}
	}
}

func (f *flooder) fail(err error) {
	f.mu.Lock()
	f.firstErr = firstOf(f.firstErr, err)
	f.mu.Unlock()
}

// work is one worker: sign the next token, ask usher, count the answer.
func (f *flooder) work() {
	auds := []string{"api/users", "api/invoices"}
	for time.Now().Before(f.deadline) {
		i := f.next.Add(1) - 1
		if i >= f.max {
			return
		}
		aud := auds[i%2]
		tok, err := benchjwt.Sign(f.s, map[string]any{
			"iss": benchjwt.Issuer, "sub": fmt.Sprintf("bench-client-%d", i%100), "aud": aud,
			"scope": "bench", "iat": f.iat, "exp": f.exp, "jti": fmt.Sprintf("%s-%d", f.run, i),
		}, false)
		if err != nil {
			f.fail(err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := f.tc.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: aud})
		cancel()
		f.sent.Add(1)
		switch {
		case err != nil:
			if f.failed.Add(1) == 1 {
				f.fail(err)
			}
		case resp.GetReason() == usherv1.Reason_REASON_VALID:
			f.valid.Add(1)
		default:
			if f.other.Add(1) == 1 {
				f.fail(fmt.Errorf("verdict %s: %s", resp.GetReason(), resp.GetMessage()))
			}
		}
	}
}

func firstOf(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// memory returns VmRSS and VmHWM of a process, in kB (proc(5)).
func memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			hwm, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return rss, hwm, nil
}

// entries reads a data file and its expected verdicts, the first max of
// each (all when max is 0).
func entries(path, expectPath string, expect map[string][]string, max int) ([]request, []string, error) {
	var reqs []request
	if err := readJSON(path, &reqs); err != nil {
		return nil, nil, err
	}
	want, ok := expect[filepath.Base(path)]
	if !ok || len(want) != len(reqs) {
		return nil, nil, fmt.Errorf("%s: %s has no expectation of %d entries", path, expectPath, len(reqs))
	}
	if max > 0 && len(reqs) > max {
		reqs, want = reqs[:max], want[:max]
	}
	return reqs, want, nil
}
