package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"syscall"
)

// failureClass words a failed fetch for callers: what kind of failure it
// was ("connection refused", "timeout", a TLS problem…), not the addresses
// and ports the network error names (the log has those). A caller must not
// learn from it what listens where in the network usher runs in.
func failureClass(err error) string {
	var refused *refusedError
	var op *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &refused):
		return refused.Error()
	case errors.As(err, &op) && op.Op == "proxyconnect":
		return "cannot reach the proxy: " + failureClass(op.Err)
	case errors.As(err, &dnsErr):
		switch {
		case dnsErr.IsNotFound:
			return "DNS: no such host"
		case dnsErr.IsTimeout:
			return "DNS: lookup timed out"
		}
		return "DNS: lookup failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to the host"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	if s := tlsFailure(err); s != "" {
		return s
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if errors.As(err, &op) {
		// The OpError's own text names the addresses; what it wraps does not.
		return "connection failed: " + op.Err.Error()
	}
	return err.Error()
}

// tlsFailure words a failed TLS handshake, or "" when err is not one. A
// certificate's names are left out: they may name internal hosts.
func tlsFailure(err error) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var alert tls.AlertError
	switch {
	case errors.As(err, &unknown):
		return "TLS: the server's certificate is not signed by an authority usher trusts"
	case errors.As(err, &host):
		return "TLS: the server's certificate is not valid for the host name"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "TLS: the server's certificate has expired or is not yet valid"
	case errors.As(err, &invalid):
		return "TLS: the server's certificate is invalid"
	case errors.As(err, &record):
		return "TLS: the server did not answer with TLS (plain http on an https URL?)"
	case errors.As(err, &alert):
		return "TLS: the server refused the handshake (" + alert.Error() + ")"
	}
	return ""
}
