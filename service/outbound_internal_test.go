package service

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// neverForms are addresses no fetch may reach, with a port, in the forms
// that lead to a metadata service: IPv4 link-local, IPv6 link-local,
// IPv4-mapped, NAT64 (well-known and local-use prefixes), 6to4, the cloud
// providers' own metadata addresses, the unspecified addresses.
var neverForms = []string{
	"169.254.169.254:443",
	"[fe80::1]:443",
	"[fe80::a9fe:a9fe%lo]:443",
	"[::ffff:169.254.169.254]:443",
	"[64:ff9b::a9fe:a9fe]:443",
	"[64:ff9b:1::a9fe:a9fe]:443",
	"[2002:a9fe:a9fe::1]:443",
	"[fd00:ec2::254]:443",
	"[fd20:ce::254]:443",
	"100.100.100.200:80",
	"168.63.129.16:80",
	"0.0.0.0:443",
	"[::]:443",
}

// publicIssuer is an issuer on a public name without allow_private_network.
var publicIssuer = IssuerConfig{Issuer: "https://login.example.com", Discovery: true}

func TestAddrClass(t *testing.T) {
	for _, c := range []struct {
		addr string
		want addrClass
	}{
		{"1.1.1.1", addrPublic},
		{"2606:4700:4700::1111", addrPublic},
		{"64:ff9b::101:101", addrPublic}, // NAT64 of 1.1.1.1: how an IPv6-only host reaches a public issuer
		{"2002:101:101::1", addrPublic},  // 6to4 of 1.1.1.1
		{"127.0.0.1", addrLoopback},
		{"127.9.9.9", addrLoopback},
		{"::1", addrLoopback},
		{"::ffff:127.0.0.1", addrLoopback},
		{"64:ff9b::7f00:1", addrLoopback},
		{"10.0.0.5", addrPrivate},
		{"172.16.0.1", addrPrivate},
		{"192.168.1.1", addrPrivate},
		{"100.64.0.1", addrPrivate},
		{"198.18.0.1", addrPrivate},
		{"192.0.2.1", addrPrivate},
		{"fd12:3456::1", addrPrivate},
		{"fec0::1", addrPrivate},
		{"2001:db8::1", addrPrivate},
		{"::ffff:10.0.0.5", addrPrivate},
		{"64:ff9b::a00:5", addrPrivate},     // NAT64 of 10.0.0.5
		{"64:ff9b:1::101:101", addrPrivate}, // local-use NAT64: private whatever it embeds
		{"2002:a00:5::1", addrPrivate},      // 6to4 of 10.0.0.5
		{"::a00:5", addrPrivate},            // IPv4-compatible
		{"169.254.169.254", addrNever},
		{"169.254.170.2", addrNever},
		{"fe80::1", addrNever},
		{"fe80::1%eth0", addrNever},
		{"::ffff:169.254.169.254", addrNever},
		{"64:ff9b::a9fe:a9fe", addrNever},
		{"64:ff9b:1::a9fe:a9fe", addrNever},     // local-use NAT64, /96
		{"64:ff9b:1:a9fe:a9:fe00::", addrNever}, // local-use NAT64, /48 (RFC 6052 §2.2)
		{"2002:a9fe:a9fe::1", addrNever},
		{"::a9fe:a9fe", addrNever},
		{"fd00:ec2::254", addrNever},
		{"fd00:ec2::23", addrNever},
		{"fd20:ce::254", addrNever},
		{"100.100.100.200", addrNever},
		{"168.63.129.16", addrNever},
		{"192.0.0.192", addrNever},
		{"0.0.0.0", addrNever},
		{"::", addrNever},
		{"224.0.0.1", addrNever},
		{"ff02::1", addrNever},
		{"255.255.255.255", addrNever},
	} {
		if got := classify(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("classify(%s) = %d, want %d", c.addr, got, c.want)
		}
	}
}

func TestFetchPolicy(t *testing.T) {
	loop, ten, eleven := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6")
	for _, c := range []struct {
		name        string
		ic          IssuerConfig
		loop, named bool // 127.0.0.1 allowed; 10.0.0.5 allowed
		other       bool // 10.0.0.6 allowed
	}{
		{"public issuer", publicIssuer, false, false, false},
		{"loopback issuer (usher dev)", IssuerConfig{Issuer: "http://127.0.0.1:8080", Discovery: true}, true, false, false},
		{"localhost issuer", IssuerConfig{Issuer: "http://localhost:8080", Discovery: true}, true, false, false},
		{"jwks_uri written on loopback", IssuerConfig{Issuer: "https://a.example", JWKSURI: "http://127.0.0.1:9/jwks.json"}, true, false, false},
		{"jwks_uri written on a private address", IssuerConfig{Issuer: "https://a.example", JWKSURI: "https://10.0.0.5/jwks.json"}, false, true, false},
		{"issuer written on a private address", IssuerConfig{Issuer: "https://10.0.0.5", Discovery: true}, false, true, false},
		{"allow_private_network", IssuerConfig{Issuer: "https://a.example", Discovery: true, AllowPrivateNetwork: true}, true, true, true},
	} {
		p := policyFor(c.ic)
		for _, a := range []struct {
			addr netip.Addr
			want bool
		}{{loop, c.loop}, {ten, c.named}, {eleven, c.other}, {netip.MustParseAddr("1.1.1.1"), true}, {netip.MustParseAddr("169.254.169.254"), false}} {
			if _, ok := p.allows(a.addr); ok != a.want {
				t.Errorf("%s: %s allowed = %v, want %v", c.name, a.addr, ok, a.want)
			}
		}
	}
}

// fakeDNS is a DNS server on 127.0.0.1 answering A and AAAA queries from
// table (NXDOMAIN for other names), and a resolver that asks only it: the
// client under test resolves names as usual, through a real DNS exchange.
func fakeDNS(t *testing.T, table map[string][]netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := answerDNS(buf[:n], table); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func answerDNS(query []byte, table map[string][]netip.Addr) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	addrs, known := table[strings.TrimSuffix(q.Name.String(), ".")]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeSuccess}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	for _, a := range addrs {
		hdr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			b.AResource(hdr, dnsmessage.AResource{A: a.As4()})
		case q.Type == dnsmessage.TypeAAAA && a.Is6():
			b.AAAAResource(hdr, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// countingListener accepts TCP connections on 127.0.0.1 and closes them,
// counting them: whether a fetch reached the network at all.
func countingListener(t *testing.T) (port string, accepted *atomic.Int64) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	accepted = new(atomic.Int64)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	_, port, _ = net.SplitHostPort(lis.Addr().String())
	return port, accepted
}

func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestFetchClient_DNSCannotLeadToAPrivateAddress: a name that resolves to
// loopback or a private address is refused at the dial, before any packet
// is sent to it, unless the issuer allows its private network by name; the
// error names the class of address, not the address or the port.
func TestFetchClient_DNSCannotLeadToAPrivateAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	port, accepted := countingListener(t)
	res := fakeDNS(t, map[string][]netip.Addr{
		"keys.usher.test": {netip.MustParseAddr("127.0.0.1")},
	})
	u := "https://keys.usher.test:" + port + "/jwks.json"

	public := guardClient(newFetchClientVia(5*time.Second, noProxy, res), publicIssuer, discard())
	_, err := getLimited(ctx, public, u, 1024)
	var refused *refusedError
	if !errors.As(err, &refused) || !refused.resolved || refused.class != addrLoopback {
		t.Fatalf("a public issuer's key set on a name resolving to 127.0.0.1: %v", err)
	}
	var fe *fetchError
	if !errors.As(err, &fe) || strings.Contains(fe.Error(), "127.0.0.1") || strings.Contains(fe.Error(), port) {
		t.Errorf("what callers see names the address or port: %v", err)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("%d connections reached the loopback listener", n)
	}

	opted := publicIssuer
	opted.AllowPrivateNetwork = true
	for _, ic := range []IssuerConfig{opted, {Issuer: "http://127.0.0.1:8080", Discovery: true}} {
		before := accepted.Load()
		_, err = getLimited(ctx, guardClient(newFetchClientVia(5*time.Second, noProxy, res), ic, discard()), u, 1024)
		if errors.As(err, &refused) {
			t.Fatalf("%+v: refused: %v", ic, err)
		}
		for accepted.Load() == before && ctx.Err() == nil {
			time.Sleep(time.Millisecond) // the listener counts just after accepting
		}
		if accepted.Load() == before {
			t.Fatalf("%+v: the dial never reached the listener", ic)
		}
	}
}

// recordingProxy is an HTTP proxy that records what it is asked
// (CONNECT host:port, or the host of an absolute-form request) and connects
// nowhere: it answers 403.
type recordingProxy struct {
	*httptest.Server
	mu    sync.Mutex
	asked []string
}

func newRecordingProxy(t *testing.T) *recordingProxy {
	p := &recordingProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.asked = append(p.asked, r.Method+" "+r.Host)
		p.mu.Unlock()
		http.Error(w, "this test proxy connects nowhere", http.StatusForbidden)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *recordingProxy) Asked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.asked)
}

// TestFetchClient_ProxyIsNeverAskedForARefusedTarget: through a proxy usher
// does not dial the target, so the target is checked before the proxy is
// asked: the proxy never sees a CONNECT to a metadata address in any form,
// nor (for a public issuer) to a private one, by address or by name.
func TestFetchClient_ProxyIsNeverAskedForARefusedTarget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := fakeDNS(t, map[string][]netip.Addr{
		"meta.usher.test":    {netip.MustParseAddr("169.254.169.254")},
		"nat64.usher.test":   {netip.MustParseAddr("64:ff9b::a9fe:a9fe")},
		"private.usher.test": {netip.MustParseAddr("10.0.0.5")},
		"mixed.usher.test":   {netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("127.0.0.1")},
		"public.usher.test":  {netip.MustParseAddr("1.1.1.1")},
	})
	var never []string
	for _, a := range neverForms {
		never = append(never, "https://"+strings.Replace(a, "%lo", "%25lo", 1)+"/latest/meta-data/")
	}
	never = append(never, "https://meta.usher.test/", "https://nat64.usher.test/", "http://169.254.169.254/latest/meta-data/")
	private := []string{"https://10.0.0.5/", "https://[fd12::1]/", "https://private.usher.test/", "https://mixed.usher.test/", "https://127.0.0.1:8443/", "https://localhost:8443/"}
	allowed := []string{"https://1.1.1.1/", "https://public.usher.test/", "https://unknown.usher.test/"}

	for _, c := range []struct {
		name    string
		guard   *IssuerConfig // nil: the client alone, without an issuer's rules
		refused []string
	}{
		{"public issuer", &publicIssuer, append(slices.Clone(never), private...)},
		{"no issuer's rules", nil, never},
	} {
		t.Run(c.name, func(t *testing.T) {
			proxy := newRecordingProxy(t)
			pu, _ := url.Parse(proxy.URL)
			hc := newFetchClientVia(5*time.Second, http.ProxyURL(pu), res)
			if c.guard != nil {
				hc = guardClient(hc, *c.guard, discard())
			}
			for _, u := range c.refused {
				_, err := getLimited(ctx, hc, u, 1024)
				if err == nil || !strings.Contains(err.Error(), "refused: ") {
					t.Errorf("%s: %v", u, err)
				}
			}
			if got := proxy.Asked(); len(got) > 0 {
				t.Fatalf("the proxy was asked %q", got)
			}
			// A target that passes goes to the proxy; a name usher cannot
			// resolve is the proxy's to resolve.
			for _, u := range allowed {
				if _, err := getLimited(ctx, hc, u, 1024); err == nil || strings.Contains(err.Error(), "refused: ") {
					t.Errorf("%s: %v, want the proxy's 403", u, err)
				}
			}
			want := []string{"CONNECT 1.1.1.1:443", "CONNECT public.usher.test:443", "CONNECT unknown.usher.test:443"}
			if got := proxy.Asked(); !slices.Equal(got, want) {
				t.Fatalf("the proxy was asked %q, want %q", got, want)
			}
		})
	}
}

// TestFetchClient_EnvironmentProxyIsCheckedToo: the default client takes
// its proxy from the environment (HTTPS_PROXY), as before, and checks the
// target before asking it. The environment is read once per process, so a
// child process runs the client with HTTPS_PROXY set.
func TestFetchClient_EnvironmentProxyIsCheckedToo(t *testing.T) {
	if os.Getenv("USHER_TEST_ENV_PROXY_CHILD") == "1" {
		envProxyChild(t)
		return
	}
	proxy := newRecordingProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFetchClient_EnvironmentProxyIsCheckedToo$", "-test.count=1", "-test.v")
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasSuffix(strings.ToUpper(k), "_PROXY") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HTTPS_PROXY="+proxy.URL, "HTTP_PROXY="+proxy.URL, "USHER_TEST_ENV_PROXY_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("--- PASS")) {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if got, want := proxy.Asked(), []string{"CONNECT 1.1.1.1:443"}; !slices.Equal(got, want) {
		t.Fatalf("the proxy was asked %q, want %q", got, want)
	}
}

func envProxyChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hc := newFetchClient(5 * time.Second)
	for _, u := range []string{"https://169.254.169.254/latest/meta-data/", "https://[64:ff9b::a9fe:a9fe]/", "https://[::ffff:169.254.169.254]/", "https://[fd00:ec2::254]/", "https://100.100.100.200/"} {
		if _, err := getLimited(ctx, hc, u, 1024); err == nil || !strings.Contains(err.Error(), "refused: ") {
			t.Errorf("%s: %v", u, err)
		}
	}
	if _, err := getLimited(ctx, guardClient(hc, publicIssuer, discard()), "https://10.0.0.5/", 1024); err == nil || !strings.Contains(err.Error(), "private address") {
		t.Errorf("a public issuer's private target: %v", err)
	}
	if _, err := getLimited(ctx, hc, "https://1.1.1.1/", 1024); err == nil || strings.Contains(err.Error(), "refused: ") {
		t.Errorf("a public target: %v, want the proxy's 403", err)
	}
}

// TestFetchClient_RefusesSpecialAddressesBeforeSending: an address written
// in a URL is refused by the issuer's rules before anything is sent, for
// every form, and the error names its class, not the address.
func TestFetchClient_RefusesSpecialAddressesBeforeSending(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := guardClient(newFetchClientVia(5*time.Second, noProxy, nil), publicIssuer, discard())
	for _, a := range append(slices.Clone(neverForms), "10.0.0.5:443", "[fd12::1]:443", "127.0.0.1:8443", "[::1]:8443", "localhost:8443", "100.64.0.1:443") {
		_, err := getLimited(ctx, hc, "https://"+strings.Replace(a, "%lo", "%25lo", 1)+"/", 1024)
		var refused *refusedError
		if !errors.As(err, &refused) || refused.resolved {
			t.Errorf("%s: %v, want refused before the dial", a, err)
			continue
		}
		host, port, _ := net.SplitHostPort(a)
		if msg := refused.Error(); strings.Contains(msg, host) || strings.Contains(msg, port) {
			t.Errorf("%s: %q names the address", a, msg)
		}
	}
}

// TestFailureClass: what callers see of a failed fetch is its class, not
// the addresses and ports the network error names.
func TestFailureClass(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	_, tlsPort, _ := net.SplitHostPort(tlsSrv.Listener.Addr().String())
	// The test certificate is valid for *.example.com.
	res := fakeDNS(t, map[string][]netip.Addr{"keys.example.com": {netip.MustParseAddr("127.0.0.1")}})
	loopback := IssuerConfig{Issuer: "http://127.0.0.1:1", Discovery: true}
	client := func(proxy func(*http.Request) (*url.URL, error)) *http.Client {
		return guardClient(newFetchClientVia(5*time.Second, proxy, res), loopback, discard())
	}
	expired, cancelExpired := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancelExpired()
	cu, _ := url.Parse(closedURL)
	for _, c := range []struct {
		name string
		ctx  context.Context
		hc   *http.Client
		url  string
		want string
	}{
		{"connection refused", ctx, client(noProxy), closedURL + "/jwks.json", "connection refused"},
		{"no such host", ctx, client(noProxy), "https://nowhere.usher.test/jwks.json", "DNS: no such host"},
		{"unknown authority", ctx, client(noProxy), "https://keys.example.com:" + tlsPort + "/jwks.json", "TLS: the server's certificate is not signed by an authority usher trusts"},
		{"timeout", expired, client(noProxy), "https://keys.example.com:" + tlsPort + "/jwks.json", "timeout"},
		{"proxy down", ctx, client(http.ProxyURL(cu)), "https://1.1.1.1/jwks.json", "cannot reach the proxy: connection refused"},
	} {
		_, err := getLimited(c.ctx, c.hc, c.url, 1024)
		var fe *fetchError
		if !errors.As(err, &fe) {
			t.Errorf("%s: %v is not a fetchError", c.name, err)
			continue
		}
		if got := fe.Error(); !strings.HasPrefix(got, c.want) || strings.Contains(got, "127.0.0.1") || strings.Contains(got, tlsPort) || strings.Contains(got, cu.Port()) {
			t.Errorf("%s: %q, want %q and no address", c.name, got, c.want)
		}
	}
	if got := failureClass(tls.RecordHeaderError{}); !strings.Contains(got, "did not answer with TLS") {
		t.Errorf("record header: %q", got)
	}
}
