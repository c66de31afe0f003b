package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
)

// Shape of the replica load: bounded in goroutines, time and calls. Its
// steps follow the load's own counts, never the wall clock.
const (
	replicaCount       = 3
	replicaWorkers     = 4
	replicaKillAfter   = 1000             // successful calls of the load before the kill
	replicaWantDown    = 100              // successful calls, started once the victim was gone, before its restart
	replicaWantServed  = 20               // calls the restarted replica serves before the load stops
	replicaMaxLoad     = 20 * time.Second // a step not reached by then fails the test
	replicaCallTimeout = 2 * time.Second
	replicaMaxCalls    = 200_000 // per worker
)

// milestone is a count of the load's calls; done is closed when it
// reaches want.
type milestone struct {
	n    atomic.Int64
	want int64
	done chan struct{}
}

func newMilestone(want int64) *milestone { return &milestone{want: want, done: make(chan struct{})} }

func (m *milestone) add() {
	if m.n.Add(1) == m.want {
		close(m.done)
	}
}

// await returns once m is reached, and fails the test when ctx ends first.
func (m *milestone) await(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-m.done:
	case <-ctx.Done():
		t.Fatalf("%s: %d of %d calls when the load's time (%v) ran out", what, m.n.Load(), m.want, replicaMaxLoad)
	}
}

// replicaProc is one `usher serve` process on a fixed loopback port.
type replicaProc struct {
	addr   string
	config string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process is gone
	stderr *testkit.SyncBuffer
}

// startReplica starts `usher serve --config` and stops it (SIGKILL) in
// t.Cleanup if it is still running then.
func startReplica(t *testing.T, bin, addr, configPath string) *replicaProc {
	t.Helper()
	p := &replicaProc{addr: addr, config: configPath, exited: make(chan struct{}), stderr: &testkit.SyncBuffer{}}
	p.cmd = exec.Command(bin, "serve", "--config", configPath, "--log-level", "warn")
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start usher serve on %s: %v", addr, err)
	}
	go func() {
		_ = p.cmd.Wait() // a SIGKILLed process exits with an error, by design
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			t.Errorf("usher serve on %s did not exit within 5s of SIGKILL", addr)
		}
		if t.Failed() {
			t.Logf("usher serve on %s (pid %d) stderr:\n%s", addr, p.cmd.Process.Pid, p.stderr.String())
		}
	})
	return p
}

// kill sends SIGKILL and waits until the process is gone.
func (p *replicaProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill usher serve on %s: %v", p.addr, err)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("usher serve on %s did not exit within 5s of SIGKILL", p.addr)
	}
}

// rssKiB is the resident set size of a running process, from /proc (0 where
// that is not readable).
func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kib int
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kib); err == nil {
				return kib
			}
		}
	}
	return 0
}

// freeLoopbackPorts picks n distinct free ports on 127.0.0.1.
func freeLoopbackPorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var open []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, l) // held until all are picked, so the n differ
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range open {
		l.Close()
	}
	return addrs
}

// replicaCall is the outcome of one Validate call of the load.
type replicaCall struct {
	start, end time.Duration // since the load began
	addr       string        // the replica that answered (from grpc.Peer), "" when none did
	err        error
	valid      bool
	attempts   int32 // gRPC attempts, retries included
}

// Context keys through which one call of the load learns how many attempts
// it took and which replica answered.
type (
	replicaAttemptsKey struct{} // *atomic.Int32
	replicaPeerKey     struct{} // *string
)

// replicaRecorder records, per call, the answering peer (a unary
// interceptor adding grpc.Peer, which reports the peer of the last attempt)
// and the number of attempts (a stats.Handler sees one Begin per attempt, so
// retries, which grpc makes invisibly to the caller, are counted too).
type replicaRecorder struct {
	attempts, failedAttempts, transparent atomic.Int64
}

func (r *replicaRecorder) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	if into, ok := ctx.Value(replicaPeerKey{}).(*string); ok && p.Addr != nil {
		*into = p.Addr.String()
	}
	return err
}

func (r *replicaRecorder) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}
func (r *replicaRecorder) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (r *replicaRecorder) HandleConn(context.Context, stats.ConnStats) {}
func (r *replicaRecorder) HandleRPC(ctx context.Context, s stats.RPCStats) {
	switch s := s.(type) {
	case *stats.Begin:
		r.attempts.Add(1)
		if s.IsTransparentRetryAttempt {
			r.transparent.Add(1)
		}
		if n, ok := ctx.Value(replicaAttemptsKey{}).(*atomic.Int32); ok {
			n.Add(1)
		}
	case *stats.End:
		if s.Error != nil {
			r.failedAttempts.Add(1)
		}
	}
}

// TestReplicas_RoundRobinSurvivesKill runs three `usher serve` processes
// that trust one issuer, drives them through client.Dial (round_robin and
// the UNAVAILABLE retry policy) and SIGKILLs one mid-load, then restarts it
// on the same port: calls are spread over all three, at most the calls in
// flight on the killed process fail, and the restarted replica serves again.
func TestReplicas_RoundRobinSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three replicas under load")
	}
	bin := buildUsher(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	iss, err := devissuer.New(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	token, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	addrs := freeLoopbackPorts(t, replicaCount)
	dir := t.TempDir()
	procs := make([]*replicaProc, replicaCount)
	for i, addr := range addrs {
		conf := fmt.Sprintf("listen: %q\nissuers:\n  - issuer: %q\n    jwks_uri: %q\n    token_type: at+jwt\naudiences:\n  - audience: api/users\n    name: Users API\n",
			addr, iss.URL(), iss.JWKSURL())
		if _, err := config.Parse([]byte(conf)); err != nil {
			t.Fatalf("replica config:\n%s\n%v", conf, err)
		}
		path := filepath.Join(dir, fmt.Sprintf("usher-%d.yaml", i))
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		procs[i] = startReplica(t, bin, addr, path)
	}
	for _, p := range procs {
		_, hc := dialUsher(t, p.addr)
		waitServing(t, hc)
	}

	endpoints := make([]resolver.Endpoint, len(addrs))
	for i, a := range addrs {
		endpoints[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}}
	}
	res := manual.NewBuilderWithScheme("usher-replicas")
	res.InitialState(resolver.State{Endpoints: endpoints})
	rec := &replicaRecorder{}
	c, err := client.Dial(res.Scheme()+":///usher", []grpc.DialOption{
		grpc.WithResolvers(res),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(rec.intercept),
		grpc.WithStatsHandler(rec),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	victim := procs[1]
	var (
		t0           = time.Now()
		killedAt     atomic.Int64                      // since t0, ns; 0 until the victim is gone
		restartedAt  atomic.Int64                      // since t0, ns; 0 until the restart
		untilKill    = newMilestone(replicaKillAfter)  // successful calls
		untilRestart = newMilestone(replicaWantDown)   // successful calls started after the victim was gone
		untilStop    = newMilestone(replicaWantServed) // calls the restarted replica answered
		stop         = make(chan struct{})
		wg           sync.WaitGroup
		results      = make([][]replicaCall, replicaWorkers)
	)
	for w := range replicaWorkers {
		wg.Go(func() {
			for range replicaMaxCalls {
				select {
				case <-stop:
					return
				default:
				}
				var n atomic.Int32
				var addr string
				cctx := context.WithValue(context.WithValue(ctx, replicaAttemptsKey{}, &n), replicaPeerKey{}, &addr)
				cctx, ccancel := context.WithTimeout(cctx, replicaCallTimeout)
				start := time.Since(t0)
				resp, err := c.Validate(cctx, token, "api/users", []string{"users.read"})
				ccancel()
				call := replicaCall{start: start, end: time.Since(t0), addr: addr, err: err, valid: resp.GetValid(), attempts: n.Load()}
				results[w] = append(results[w], call)
				if call.err != nil || !call.valid {
					continue
				}
				k, r := killedAt.Load(), restartedAt.Load()
				switch {
				case k == 0:
					untilKill.add()
				case r == 0 && call.start > time.Duration(k):
					untilRestart.add()
				case r != 0 && call.addr == victim.addr && call.start > time.Duration(r):
					untilStop.add()
				}
			}
		})
	}

	// halt stops the load; also on a t.Fatal below, before the client closes.
	var once sync.Once
	halt := func() {
		once.Do(func() { close(stop) })
		wg.Wait()
	}
	t.Cleanup(halt)

	lctx, lcancel := context.WithTimeout(ctx, replicaMaxLoad)
	defer lcancel()
	untilKill.await(t, lctx, "round_robin over three replicas before the kill")
	killAt := time.Since(t0)
	victim.kill(t)
	killed := time.Since(t0) // the process is gone
	killedAt.Store(int64(killed))
	untilRestart.await(t, lctx, "calls served by the two others while the victim was gone")
	replacement := startReplica(t, bin, victim.addr, victim.config)
	restarted := time.Since(t0)
	restartedAt.Store(int64(restarted))
	_, hc := dialUsher(t, victim.addr)
	waitServing(t, hc)
	serving := time.Since(t0)
	untilStop.await(t, lctx, "calls the restarted replica answered")
	halt()
	loadTime := time.Since(t0)

	var calls []replicaCall
	for _, r := range results {
		calls = append(calls, r...)
	}
	var (
		failed                           []replicaCall
		perAddr, beforeKill, afterStart  = map[string]int{}, map[string]int{}, map[string]int{}
		deadAnswered, retried, whileDown int
		totalBeforeKill                  int
	)
	for _, cl := range calls {
		if cl.attempts > 1 {
			retried++
		}
		if cl.err != nil || !cl.valid {
			failed = append(failed, cl)
			continue
		}
		perAddr[cl.addr]++
		if cl.end < killAt {
			beforeKill[cl.addr]++
			totalBeforeKill++
		}
		if cl.start > restarted {
			afterStart[cl.addr]++
		}
		if cl.start > killed && cl.end < restarted {
			whileDown++
			if cl.addr == victim.addr {
				deadAnswered++
			}
		}
	}
	rss := []string{}
	for _, p := range append(slices.Clone(procs), replacement) {
		if kib := rssKiB(p.cmd.Process.Pid); kib > 0 && p != victim {
			rss = append(rss, fmt.Sprintf("%s %.1f MiB", p.addr, float64(kib)/1024))
		}
	}

	t.Logf("load: %d workers for %v; %s SIGKILLed at %v (gone at %v), restarted at %v, health SERVING seen at %v",
		replicaWorkers, loadTime.Round(time.Millisecond), victim.addr, killAt.Round(time.Millisecond), killed.Round(time.Millisecond), restarted.Round(time.Millisecond), serving.Round(time.Millisecond))
	t.Logf("calls: %d made, %d succeeded, %d failed (allowed: at most %d, the calls in flight on the killed replica)",
		len(calls), len(calls)-len(failed), len(failed), replicaWorkers)
	t.Logf("while %s was down (%v): %d calls succeeded on the other replicas", victim.addr, (restarted - killed).Round(time.Millisecond), whileDown-deadAnswered)
	t.Logf("attempts: %d gRPC attempts for %d calls; %d calls needed more than one attempt (retried by grpc, invisible to the caller), failed attempts: %d; attempts that were transparent retries: %d",
		rec.attempts.Load(), len(calls), retried, rec.failedAttempts.Load(), rec.transparent.Load())
	for _, a := range addrs {
		mark := ""
		if a == victim.addr {
			mark = " (killed and restarted)"
		}
		t.Logf("replica %s%s: %d calls in all, %d before the kill, %d started after the restart", a, mark, perAddr[a], beforeKill[a], afterStart[a])
	}
	if len(rss) > 0 {
		t.Logf("resident memory after the load: %s", strings.Join(rss, ", "))
	}
	for _, f := range failed {
		t.Logf("failed call: started %v, ended %v, %d attempts, valid=%v, %v", f.start.Round(time.Millisecond), f.end.Round(time.Millisecond), f.attempts, f.valid, status.Convert(f.err))
	}

	if len(calls) < 100 {
		t.Fatalf("only %d calls in %v: the load did not run", len(calls), loadTime)
	}
	if len(failed) > replicaWorkers {
		t.Errorf("%d calls failed; at most %d (those in flight on the killed replica) may", len(failed), replicaWorkers)
	}
	for _, f := range failed {
		if f.end < killAt {
			t.Errorf("a call failed at %v, before the kill at %v: %v (valid=%v)", f.end, killAt, f.err, f.valid)
		}
	}
	for _, a := range addrs {
		if beforeKill[a] < totalBeforeKill/(2*replicaCount) {
			t.Errorf("replica %s served %d of %d calls before the kill: round_robin should give each about a third", a, beforeKill[a], totalBeforeKill)
		}
	}
	unknown := len(calls) - len(failed)
	for _, a := range addrs {
		unknown -= perAddr[a]
	}
	if unknown != 0 {
		t.Errorf("%d successful calls were answered by an address that is not a replica", unknown)
	}
	if whileDown == 0 {
		t.Errorf("no call succeeded in the %v %s was down", (restarted - killed).Round(time.Millisecond), victim.addr)
	}
	if deadAnswered != 0 {
		t.Errorf("%d calls made while %s was dead are recorded as answered by it: the per-replica counts are wrong", deadAnswered, victim.addr)
	}
	if afterStart[victim.addr] == 0 {
		t.Errorf("the restarted replica %s served no call in the %v after its restart", victim.addr, (loadTime - restarted).Round(time.Millisecond))
	}
	for _, a := range addrs {
		if a != victim.addr && afterStart[a] == 0 {
			t.Errorf("replica %s served no call after the restart", a)
		}
	}
}
