package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/internal/config"
)

// The client commands' environment variables. A flag given on the command
// line wins over its variable.
const (
	envAddr       = "USHER_ADDR"
	envCACert     = "USHER_CACERT"
	envCert       = "USHER_CERT"
	envKey        = "USHER_KEY"
	envServerName = "USHER_SERVERNAME"
)

// defaultAddr is where the client commands look for usher without --addr
// or USHER_ADDR: usher dev's default.
const defaultAddr = config.DefaultListen

// transport is how a client command reaches usher: plaintext or TLS, with
// which CA, client certificate and server name. Without a flag or variable
// that asks for TLS, a loopback address is dialled in plaintext (usher dev,
// a port-forward) and any other over TLS with the system's roots: a token is
// never sent in clear across a network unless --plaintext says so.
type transport struct {
	cacert, cert, key, servername string
	plaintext, tls                bool
	// from names where each file or name came from (the flag or the
	// variable), for the error messages.
	from map[string]string
	// certAsked is set once a server asked for a client certificate during
	// a handshake: under TLS 1.3 its refusal may reach the client as a mere
	// broken pipe.
	certAsked atomic.Bool
}

func (t *transport) register(fs *flag.FlagSet) {
	fs.StringVar(&t.cacert, "cacert", "", "PEM file of the CA that signed usher's certificate; implies TLS (env "+envCACert+"; default: the system's roots)")
	fs.StringVar(&t.cert, "cert", "", "PEM client certificate for a usher that requires one (mTLS, tls.client_ca_file); with --key; implies TLS (env "+envCert+")")
	fs.StringVar(&t.key, "key", "", "PEM private key of --cert (env "+envKey+")")
	fs.StringVar(&t.servername, "servername", "", "the name usher's certificate is checked against, when --addr's host is not in it; implies TLS (env "+envServerName+")")
	fs.BoolVar(&t.plaintext, "plaintext", false, "no TLS even off loopback (e.g. behind a mesh sidecar that encrypts); without TLS flags, loopback is plaintext already")
	fs.BoolVar(&t.tls, "tls", false, "TLS with the system's roots even to a loopback --addr")
}

// resolve fills what the flags left unset from the environment (flags win:
// --plaintext sets the TLS variables aside) and refuses contradictions.
func (t *transport) resolve(getenv func(string) string) error {
	t.from = map[string]string{"cacert": "--cacert", "cert": "--cert", "key": "--key", "servername": "--servername"}
	if !t.plaintext {
		for _, v := range []struct {
			dst       *string
			name, env string
		}{{&t.cacert, "cacert", envCACert}, {&t.cert, "cert", envCert}, {&t.key, "key", envKey}, {&t.servername, "servername", envServerName}} {
			if *v.dst == "" && getenv(v.env) != "" {
				*v.dst, t.from[v.name] = getenv(v.env), v.env
			}
		}
	}
	switch {
	case t.plaintext && t.tls:
		return usageError{"--plaintext and --tls contradict each other: give one"}
	case t.plaintext && t.tlsAsked():
		return usageError{"--plaintext with --cacert, --cert, --key or --servername: those are TLS settings; drop --plaintext to use TLS, or drop them"}
	case t.cert != "" && t.key == "":
		return usageError{fmt.Sprintf("%s %s without a key: give the client certificate's private key with --key FILE (or %s)", t.from["cert"], t.cert, envKey)}
	case t.key != "" && t.cert == "":
		return usageError{fmt.Sprintf("%s %s without a certificate: give the client certificate with --cert FILE (or %s)", t.from["key"], t.key, envCert)}
	}
	return nil
}

func (t *transport) tlsAsked() bool {
	return t.cacert != "" || t.cert != "" || t.key != "" || t.servername != ""
}

// useTLS says whether addr is dialled over TLS.
func (t *transport) useTLS(addr string) bool {
	switch {
	case t.plaintext:
		return false
	case t.tls || t.tlsAsked():
		return true
	default:
		return !loopbackTarget(addr)
	}
}

// loopbackTarget: a gRPC target on this machine (a loopback host, with or
// without a resolver scheme, or a unix socket).
func loopbackTarget(addr string) bool {
	if strings.HasPrefix(addr, "unix:") || strings.HasPrefix(addr, "unix-abstract:") {
		return true
	}
	for _, scheme := range []string{"dns:///", "passthrough:///", "ipv4:", "ipv6:"} {
		addr = strings.TrimPrefix(addr, scheme)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return config.IsLoopback(host)
}

// dialOption is the transport credentials for addr.
func (t *transport) dialOption(addr string) (grpc.DialOption, error) {
	if !t.useTLS(addr) {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.servername}
	if t.cacert != "" {
		pem, err := os.ReadFile(t.cacert)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.from["cacert"], err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the CA certificate that signed usher's tls.cert_file", t.from["cacert"], printable(t.cacert))
		}
	}
	cert := &tls.Certificate{} // none
	if t.cert != "" {
		pair, err := tls.LoadX509KeyPair(t.cert, t.key)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s %s, %s %s: %w", t.from["cert"], printable(t.cert), t.from["key"], printable(t.key), err)
		}
		cert = &pair
	}
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		t.certAsked.Store(true)
		return cert, nil
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(conf)), nil
}

// describe says how addr is dialled, for error messages.
func (t *transport) describe(addr string) string {
	if t.useTLS(addr) {
		return "over TLS"
	}
	return "in plaintext"
}

// fix is what to do about a failed call, read from its error: the TLS
// problems a first connection to a TLS or mTLS usher runs into, each with
// the flag that solves it.
func (t *transport) fix(err error, addr string) string {
	if status.Code(err) != codes.Unavailable {
		return ""
	}
	msg := err.Error()
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(msg, s) {
				return true
			}
		}
		return false
	}
	switch {
	case has("first record does not look like a TLS handshake"):
		return "usher at " + addr + " serves plaintext, not TLS: drop --cacert, --cert, --key, --servername and --tls (and their USHER_ variables), or pass --plaintext"
	case has("certificate signed by unknown authority", "certificate is not trusted", "failed to verify certificate: x509: certificate has expired") && !has("remote error"):
		return "usher's certificate is not signed by a CA this command trusts: pass --cacert FILE (or " + envCACert + "), the CA certificate that signed usher's tls.cert_file"
	case has("x509: certificate is valid for", "doesn't contain any IP SANs", "not valid for any names"):
		return "usher's certificate does not name " + addr + ": dial a name it holds, or pass --servername NAME (or " + envServerName + ") with one"
	case has("certificate required") || (t.certAsked.Load() && t.cert == ""):
		return "usher requires a client certificate (mTLS, tls.client_ca_file): pass --cert FILE --key FILE (or " + envCert + ", " + envKey + "), a certificate issued by the CA in usher's tls.client_ca_file"
	case has("remote error: tls: unknown certificate authority", "remote error: tls: bad certificate", "remote error: tls: certificate unknown", "remote error: tls: expired certificate") ||
		(t.certAsked.Load() && has("broken pipe", "connection reset", "EOF")):
		return "usher refused the client certificate " + printable(t.cert) + ": it must be issued by the CA in usher's tls.client_ca_file, be valid now and allow client authentication"
	case !t.useTLS(addr) && has("server preface", "EOF", "connection reset"):
		return "dialled " + addr + " in plaintext and the connection was closed: if usher serves TLS there, pass --cacert FILE (or " + envCACert + ") with the CA that signed its certificate, or --tls for the system's roots"
	default:
		return "is `usher dev` or `usher serve` running there? set --addr (or " + envAddr + ")"
	}
}
