// Package servertls serves TLS from certificate files that are re-read when
// they change, so that rotated certificates (cert-manager, a mounted Secret)
// are served without a restart.
package servertls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// tlsReloadCheck is how often the certificate files' modification times are
// looked at, at most.
const tlsReloadCheck = time.Second

// Files names a server's certificate and key and, for mTLS, the CA whose
// certificates clients must present.
type Files struct {
	CertFile, KeyFile, ClientCAFile string
}

// Config returns a TLS configuration whose certificate (and client CA pool,
// for mTLS) are re-read from disk when the files change. A file that fails to
// load keeps the previous one in service, and the error goes to onError.
func Config(f Files, onError func(error)) (*tls.Config, error) {
	r := &tlsFiles{cfg: f, onError: onError}
	if err := r.load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Offered here too: an http.Server decides from this config, not the
		// per-client one, whether to serve HTTP/2 over TLS.
		NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current(), nil
		},
	}, nil
}

type tlsFiles struct {
	cfg     Files
	onError func(error)

	mu      sync.Mutex
	conf    *tls.Config
	mtimes  [3]time.Time
	checked time.Time
}

func (r *tlsFiles) files() [3]string {
	return [3]string{r.cfg.CertFile, r.cfg.KeyFile, r.cfg.ClientCAFile}
}

func (r *tlsFiles) stat() ([3]time.Time, error) {
	var out [3]time.Time
	for i, f := range r.files() {
		if f == "" {
			continue
		}
		st, err := os.Stat(f)
		if err != nil {
			return out, err
		}
		out[i] = st.ModTime()
	}
	return out, nil
}

func (r *tlsFiles) load() error {
	mtimes, err := r.stat()
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: cert_file/key_file: %w", err)
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	if r.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(r.cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("tls: client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("tls: client_ca_file holds no PEM certificate")
		}
		conf.ClientCAs, conf.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	r.mu.Lock()
	r.conf, r.mtimes, r.checked = conf, mtimes, time.Now()
	r.mu.Unlock()
	return nil
}

// current returns the configuration, reloading it first when a file changed
// (checked at most once per tlsReloadCheck).
func (r *tlsFiles) current() *tls.Config {
	r.mu.Lock()
	conf, due := r.conf, time.Since(r.checked) >= tlsReloadCheck
	if due {
		r.checked = time.Now()
	}
	old := r.mtimes
	r.mu.Unlock()
	if !due {
		return conf
	}
	if mtimes, err := r.stat(); err == nil && mtimes == old {
		return conf
	}
	if err := r.load(); err != nil {
		if r.onError != nil {
			r.onError(fmt.Errorf("%w (still serving the previous certificate)", err))
		}
		return conf
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conf
}
