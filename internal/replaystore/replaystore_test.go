package replaystore_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-dev/usher/internal/replaystore"
	"github.com/usher-dev/usher/internal/replaystore/redistest"
	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

var _ service.ReplayStore = (*replaystore.Redis)(nil)

// observed records what a store's observer was told.
type observed struct {
	mu    sync.Mutex
	calls int
	errs  []error
}

func (o *observed) observe(_ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	if err != nil {
		o.errs = append(o.errs, err)
	}
}

func (o *observed) counts() (calls, errs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.calls, len(o.errs)
}

func newStore(t *testing.T, url string, opts ...replaystore.Option) *replaystore.Redis {
	t.Helper()
	s, err := replaystore.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// raw is a plain client to look at what the store wrote.
func raw(t *testing.T, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// The first Remember of a key is fresh, the second is not; the key is
// written under the prefix with a TTL that ends at the expiry; another key
// is fresh; a store with another prefix does not see the first one's keys.
func TestRemember_FreshOnceWithTheExpiry(t *testing.T) {
	ctx := testkit.Context(t)
	srv := redistest.Start(t)
	var obs observed
	s := newStore(t, srv.URL(), replaystore.WithObserver(obs.observe))
	expires := time.Now().Add(1500 * time.Millisecond)
	for i, want := range []bool{true, false, false} {
		fresh, err := s.Remember(ctx, "jkt-1:jti-1", expires)
		if err != nil || fresh != want {
			t.Fatalf("Remember #%d = %v, %v; want %v, nil", i+1, fresh, err, want)
		}
	}
	if fresh, err := s.Remember(ctx, "jkt-1:jti-2", expires); err != nil || !fresh {
		t.Fatalf("another key: %v, %v; want fresh", fresh, err)
	}
	c := raw(t, srv.URL())
	key := s.Key("jkt-1:jti-1")
	if !strings.HasPrefix(key, replaystore.DefaultPrefix) || strings.Contains(key, "jti-1") {
		t.Errorf("key %q: want %q and a hash of the key", key, replaystore.DefaultPrefix)
	}
	pttl, err := c.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pttl <= 0 || pttl > 1500*time.Millisecond || pttl < time.Second {
		t.Errorf("PTTL of %s = %v, want the time left until the expiry (≤ 1.5s, more than 1s)", key, pttl)
	}
	if calls, errs := obs.counts(); calls != 4 || errs != 0 {
		t.Errorf("observer told of %d calls, %d errors; want 4, 0", calls, errs)
	}

	other := newStore(t, srv.URL(), replaystore.WithPrefix("usher-staging:dpop:jti:"))
	if fresh, err := other.Remember(ctx, "jkt-1:jti-1", expires); err != nil || !fresh {
		t.Errorf("a store with another prefix: %v, %v; want fresh (deployments kept apart)", fresh, err)
	}
}

// The TTL is relative to usher's clock, not an instant on Redis's: with
// usher's clock a year behind Redis's, the key still lives until the
// expiry as usher counts it (PXAT would have written a key already dead).
func TestRemember_TTLFollowsUshersClock(t *testing.T) {
	ctx := testkit.Context(t)
	srv := redistest.Start(t)
	clock := testkit.NewClock()
	clock.Set(time.Now().AddDate(-1, 0, 0))
	s := newStore(t, srv.URL(), replaystore.WithClock(clock.Now))
	if fresh, err := s.Remember(ctx, "k", clock.Now().Add(60*time.Second)); err != nil || !fresh {
		t.Fatalf("Remember = %v, %v", fresh, err)
	}
	pttl, err := raw(t, srv.URL()).PTTL(ctx, s.Key("k")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pttl < 59*time.Second || pttl > 60*time.Second {
		t.Errorf("PTTL = %v, want 60s as usher's clock counts it", pttl)
	}
	if fresh, err := s.Remember(ctx, "k", clock.Now().Add(60*time.Second)); err != nil || fresh {
		t.Errorf("again: %v, %v; want seen", fresh, err)
	}
}

// An expiry that is not in the future is refused without asking Redis:
// such a key would never be stored, and every proof would look fresh.
func TestRemember_ExpiryNotInTheFuture(t *testing.T) {
	ctx := testkit.Context(t)
	srv := redistest.Start(t)
	var obs observed
	clock := testkit.NewClock()
	s := newStore(t, srv.URL(), replaystore.WithObserver(obs.observe), replaystore.WithClock(clock.Now))
	for _, exp := range []time.Time{clock.Now(), clock.Now().Add(-time.Second), {}} {
		fresh, err := s.Remember(ctx, "k", exp)
		if err == nil || fresh || !strings.Contains(err.Error(), "not after now") {
			t.Errorf("Remember(expires %v) = %v, %v; want an error", exp, fresh, err)
		}
	}
	if n, err := raw(t, srv.URL()).Exists(ctx, s.Key("k")).Result(); err != nil || n != 0 {
		t.Errorf("EXISTS = %d, %v: nothing should be written", n, err)
	}
	if calls, _ := obs.counts(); calls != 0 {
		t.Errorf("observer told of %d calls; the store was not asked", calls)
	}
}

// Two replicas (two stores, each its own pool) race on the same proofs:
// for each, exactly one caller is told it is fresh.
func TestRemember_TwoReplicasOneWinner(t *testing.T) {
	ctx := testkit.Context(t)
	srv := redistest.Start(t)
	replicas := []*replaystore.Redis{newStore(t, srv.URL()), newStore(t, srv.URL())}
	const proofs, callersPerReplica = 100, 3
	expires := time.Now().Add(time.Minute)
	for p := range proofs {
		key := fmt.Sprintf("jkt:proof-%d", p)
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			mu    sync.Mutex
			fresh []int
			errs  []error
		)
		for r, s := range replicas {
			for range callersPerReplica {
				wg.Go(func() {
					<-start
					ok, err := s.Remember(ctx, key, expires)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, err)
					}
					if ok {
						fresh = append(fresh, r)
					}
				})
			}
		}
		close(start)
		wg.Wait()
		if len(errs) > 0 || len(fresh) != 1 {
			t.Fatalf("proof %d: fresh at replicas %v (want exactly one), errors %v", p, fresh, errs)
		}
	}
}

// A store that stopped: Remember fails at once (connection refused), the
// observer is told, the message names the store; once Redis is back (empty),
// the store answers again without a restart of usher.
func TestRemember_StoreStoppedFailsClosedAndRecovers(t *testing.T) {
	ctx := testkit.Context(t)
	srv := redistest.Start(t)
	var obs observed
	s := newStore(t, srv.URL(), replaystore.WithObserver(obs.observe))
	expires := time.Now().Add(time.Minute)
	if _, err := s.Remember(ctx, "before", expires); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	for i := range 3 {
		start := time.Now()
		fresh, err := s.Remember(ctx, fmt.Sprintf("during-%d", i), expires)
		took := time.Since(start)
		if err == nil || fresh {
			t.Fatalf("with Redis stopped: %v, %v; want an error", fresh, err)
		}
		if took > replaystore.DefaultTimeout+500*time.Millisecond {
			t.Errorf("with Redis stopped, Remember took %v; the bound is %v", took, replaystore.DefaultTimeout)
		}
		if !strings.Contains(err.Error(), srv.Addr) || !strings.Contains(err.Error(), "SET NX") {
			t.Errorf("error %q: want it to name the store %s and the command", err, srv.Addr)
		}
	}
	if _, errs := obs.counts(); errs != 3 {
		t.Errorf("observer told of %d errors, want 3", errs)
	}
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping with Redis stopped = nil")
	}
	srv.Restart(t)
	// go-redis redials in the background after failed dials: poll for it.
	testkit.Eventually(ctx, t, "the store answering after Redis restarted", func() bool {
		fresh, err := s.Remember(ctx, "after", expires)
		return err == nil && fresh
	})
}

// A store that accepts connections and never answers (a hung Redis, a
// black-holed network): every call fails within the timeout, also many at
// once through a pool of two connections.
func TestRemember_HungStoreBoundedByTimeout(t *testing.T) {
	ctx := testkit.Context(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	t.Cleanup(func() { l.Close(); held.Wait() })
	held.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // read nothing, answer nothing
		}
	})
	const timeout = 100 * time.Millisecond
	var obs observed
	s := newStore(t, "redis://"+l.Addr().String()+"/0", replaystore.WithTimeout(timeout), replaystore.WithPoolSize(2), replaystore.WithObserver(obs.observe))
	const callers = 10
	var wg sync.WaitGroup
	took := make([]time.Duration, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			start := time.Now()
			_, errs[i] = s.Remember(ctx, fmt.Sprint("k", i), time.Now().Add(time.Minute))
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	for i := range callers {
		if errs[i] == nil {
			t.Errorf("call %d: no error from a store that never answers", i)
		}
		if took[i] > timeout+500*time.Millisecond {
			t.Errorf("call %d took %v; the bound is the timeout, %v", i, took[i], timeout)
		}
	}
	if _, n := obs.counts(); n != callers {
		t.Errorf("observer told of %d errors, want %d", n, callers)
	}
	t.Logf("a hung store: %d calls, the slowest %v, the first error %v", callers, maxOf(took), errs[0])
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// A caller whose own context ended gets an error, and the observer is not
// told: the store is not at fault.
func TestRemember_CallerGaveUp(t *testing.T) {
	srv := redistest.Start(t)
	var obs observed
	s := newStore(t, srv.URL(), replaystore.WithObserver(obs.observe))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if fresh, err := s.Remember(ctx, "k", time.Now().Add(time.Minute)); err == nil || fresh || !errors.Is(err, context.Canceled) {
		t.Errorf("Remember with a cancelled context = %v, %v; want context.Canceled", fresh, err)
	}
	if calls, _ := obs.counts(); calls != 0 {
		t.Errorf("observer told of %d calls", calls)
	}
}

// A password-protected Redis: the right password works, a wrong one fails
// closed; no error, no String and no Redacted shows either password.
func TestRemember_PasswordNeverShown(t *testing.T) {
	ctx := testkit.Context(t)
	const pw, wrong = "Pa55-w0rd-s3cret", "Wr0ng-pa55-XyZ"
	srv := redistest.Start(t, "--requirepass", pw)
	good := newStore(t, "redis://:"+pw+"@"+srv.Addr+"/0")
	if fresh, err := good.Remember(ctx, "k", time.Now().Add(time.Minute)); err != nil || !fresh {
		t.Fatalf("with the password: %v, %v", fresh, err)
	}
	named := newStore(t, "redis://default:"+pw+"@"+srv.Addr+"/0")
	if fresh, err := named.Remember(ctx, "k", time.Now().Add(time.Minute)); err != nil || fresh {
		t.Fatalf("user default with the password: %v, %v; want seen", fresh, err)
	}
	bad := newStore(t, "redis://:"+wrong+"@"+srv.Addr+"/0")
	_, badErr := bad.Remember(ctx, "k2", time.Now().Add(time.Minute))
	if badErr == nil {
		t.Fatal("a wrong password: no error")
	}
	srv.Stop(t)
	_, downErr := good.Remember(ctx, "k3", time.Now().Add(time.Minute))
	pingErr := good.Ping(ctx)
	for what, msg := range map[string]string{
		"wrong password": fmt.Sprint(badErr), "stopped": fmt.Sprint(downErr), "ping": fmt.Sprint(pingErr),
		"String": fmt.Sprint(good), "Redacted": good.Redacted(), "%v of the bad store": fmt.Sprintf("%v", bad),
	} {
		if strings.Contains(msg, pw) || strings.Contains(msg, wrong) {
			t.Errorf("%s shows a password: %s", what, msg)
		}
		if !strings.Contains(msg, "redis://:xxxxx@"+srv.Addr) {
			t.Errorf("%s = %s, want the store named as redis://:xxxxx@%s", what, msg, srv.Addr)
		}
	}
	if !strings.Contains(badErr.Error(), "WRONGPASS") && !strings.Contains(badErr.Error(), "NOAUTH") {
		t.Errorf("a wrong password: %v, want Redis's WRONGPASS", badErr)
	}
	t.Logf("errors as logged: %v | %v", badErr, downErr)
}

// rediss:// speaks TLS, checks the server's certificate against the roots
// (here a private CA given with WithTLSConfig) and the URL's host; a store
// whose certificate is not trusted fails closed, and redis:// to a TLS
// port fails too.
func TestRemember_TLS(t *testing.T) {
	ctx := testkit.Context(t)
	ca := testkit.NewCA(t)
	certPEM, keyPEM := ca.Issue(t, 2, x509.ExtKeyUsageServerAuth)
	srv := redistest.StartTLS(t, certPEM, keyPEM, ca.Pool())
	if !strings.HasPrefix(srv.URL(), "rediss://") {
		t.Fatalf("URL %s", srv.URL())
	}
	s := newStore(t, srv.URL(), replaystore.WithTLSConfig(&tls.Config{RootCAs: ca.Pool()}))
	if fresh, err := s.Remember(ctx, "k", time.Now().Add(time.Minute)); err != nil || !fresh {
		t.Fatalf("over TLS: %v, %v", fresh, err)
	}
	untrusted := newStore(t, srv.URL(), replaystore.WithTLSConfig(&tls.Config{RootCAs: testkit.NewCA(t).Pool()}))
	if _, err := untrusted.Remember(ctx, "k2", time.Now().Add(time.Minute)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a certificate from another CA: %v, want a certificate error", err)
	}
	system := newStore(t, srv.URL()) // the system's roots: the test CA is not among them
	if _, err := system.Remember(ctx, "k2", time.Now().Add(time.Minute)); err == nil {
		t.Error("the system's roots: no error for a certificate of the test CA")
	}
	plain := newStore(t, strings.Replace(srv.URL(), "rediss://", "redis://", 1))
	if _, err := plain.Remember(ctx, "k3", time.Now().Add(time.Minute)); err == nil {
		t.Error("redis:// to a TLS port: no error")
	}
}
