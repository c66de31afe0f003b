// Package redistest starts a real redis-server (Debian's package, or
// Valkey's under that name) on 127.0.0.1 for tests: no persistence, its own
// temporary directory, killed when the test ends. Without redis-server on
// PATH (or at $USHER_REDIS_SERVER) the test is skipped with a message, or
// fails when USHER_REQUIRE_REDIS=1 (CI's .ci/redis sets it).
package redistest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
)

// startTimeout bounds how long redis-server may take to answer PING.
const startTimeout = 10 * time.Second

// Server is a running redis-server.
type Server struct {
	// Addr is its host:port on 127.0.0.1.
	Addr string

	bin    string
	dir    string
	args   []string
	tls    *tls.Config // nil: plain TCP
	cmd    *exec.Cmd
	exited chan struct{}
	out    *testkit.SyncBuffer
}

// Binary is the redis-server to run, or skips (fails under
// USHER_REQUIRE_REDIS=1) when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("USHER_REDIS_SERVER")
	if bin == "" {
		bin = "redis-server"
	}
	path, err := exec.LookPath(bin)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("no redis-server (%v): install it (apt-get install redis-server, or run .ci/redis) or set USHER_REDIS_SERVER to its path", err)
	if os.Getenv("USHER_REQUIRE_REDIS") == "1" {
		t.Fatal(msg + " (USHER_REQUIRE_REDIS=1: required)")
	}
	t.Skip(msg)
	return ""
}

// Start starts redis-server on a free 127.0.0.1 port, extra arguments
// appended (e.g. "--requirepass", "secret"), and waits until it answers
// PING. It is killed when the test ends.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	return launch(t, &Server{bin: Binary(t), dir: t.TempDir(), args: extra})
}

// StartTLS starts redis-server serving TLS only (rediss://), with the
// certificate and key given (PEM), clients not asked for certificates.
// roots must trust the certificate: Start's PING goes over TLS too.
func StartTLS(t testing.TB, certPEM, keyPEM []byte, roots *x509.CertPool, extra ...string) *Server {
	t.Helper()
	s := &Server{bin: Binary(t), dir: t.TempDir(), tls: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	cert, key := filepath.Join(s.dir, "redis.crt"), filepath.Join(s.dir, "redis.key")
	for path, b := range map[string][]byte{cert: certPEM, key: keyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.args = append([]string{"--tls-cert-file", cert, "--tls-key-file", key, "--tls-auth-clients", "no"}, extra...)
	return launch(t, s)
}

func launch(t testing.TB, s *Server) *Server {
	t.Helper()
	var err error
	for range 3 { // a free port may be taken between picking and binding
		if err = s.start(freePort(t)); err == nil {
			t.Cleanup(func() { s.kill() })
			return s
		}
	}
	t.Fatalf("redis-server did not start: %v", err)
	return nil
}

// URL is redis://127.0.0.1:port/0, or rediss:// for StartTLS.
func (s *Server) URL() string {
	if s.tls != nil {
		return "rediss://" + s.Addr + "/0"
	}
	return "redis://" + s.Addr + "/0"
}

// start runs redis-server on addr and waits until it answers PING.
func (s *Server) start(addr string) error {
	_, port, _ := net.SplitHostPort(addr)
	listen := []string{"--port", port}
	if s.tls != nil {
		listen = []string{"--port", "0", "--tls-port", port} // --port 0: no plain TCP
	}
	args := append([]string{"--bind", "127.0.0.1"}, listen...)
	args = append(append(args, "--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no", "--protected-mode", "yes"), s.args...)
	w := &testkit.SyncBuffer{}
	s.out = w
	s.cmd = exec.Command(s.bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = w, w
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.exited = make(chan struct{})
	cmd, exited := s.cmd, s.exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.Addr = addr
	if err := s.waitPing(exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w\nredis-server output:\n%s", err, w.String())
	}
	return nil
}

// Stop kills redis-server and waits until it is gone: clients then get
// connection refused.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("redis-server on %s did not exit within 5s of SIGKILL", s.Addr)
	}
	s.cmd = nil
}

func (s *Server) kill() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

// Restart starts redis-server again on the same port, empty.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	if err := s.start(s.Addr); err != nil {
		t.Fatalf("restart redis-server on %s: %v", s.Addr, err)
	}
}

// Output is what redis-server wrote so far (its log).
func (s *Server) Output() string { return s.out.String() }

// waitPing sends PING until redis-server answers +PONG (or -NOAUTH when a
// password is required: it answers), within startTimeout.
func (s *Server) waitPing(exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited (args %q)", s.args)
		default:
		}
		if last = s.ping(); last == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s did not answer PING within %v: %v", s.Addr, startTimeout, last)
}

func (s *Server) ping() error {
	d := &net.Dialer{Timeout: time.Second}
	var c net.Conn
	var err error
	if s.tls != nil {
		c, err = tls.DialWithDialer(d, "tcp", s.Addr, s.tls)
	} else {
		c, err = d.Dial("tcp", s.Addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
		return nil
	}
	return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
}

// freePort is a port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
