package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/service"
)

// tlsChecks checks the files of the tls section as usher serve will load
// them: each one readable, the certificate and key a pair, the certificate
// valid now, the client CA file holding certificates. A config whose TLS
// files are missing passes every other check and then fails to start.
func tlsChecks(t *config.TLS, now time.Time) []service.Check {
	const subject = "tls"
	var checks []service.Check
	read := func(key, path string) []byte {
		b, err := os.ReadFile(path)
		c := service.Check{Subject: subject, Name: "tls." + key + " readable", OK: err == nil, Detail: path}
		if err != nil {
			c.Detail = err.Error()
			c.Fix = fmt.Sprintf("put the PEM file at %s, or point tls.%s at it, readable by the user usher runs as: usher serve refuses to start without it", path, key)
		}
		checks = append(checks, c)
		return b
	}
	certPEM, keyPEM := read("cert_file", t.CertFile), read("key_file", t.KeyFile)
	if certPEM != nil && keyPEM != nil {
		checks = append(checks, keyPairChecks(subject, certPEM, keyPEM, now)...)
	}
	if t.ClientCAFile != "" {
		if caPEM := read("client_ca_file", t.ClientCAFile); caPEM != nil {
			checks = append(checks, clientCACheck(subject, caPEM))
		}
	}
	return checks
}

// keyPairChecks: the certificate and key load together, and the
// certificate is within its validity period.
func keyPairChecks(subject string, certPEM, keyPEM []byte, now time.Time) []service.Check {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return []service.Check{{Subject: subject, Name: "certificate and key load as a pair", Detail: err.Error(),
			Fix: "tls.cert_file must hold the PEM certificate (the chain, leaf first) and tls.key_file the PEM private key of that same certificate"}}
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return []service.Check{{Subject: subject, Name: "certificate and key load as a pair", Detail: err.Error(), Fix: "replace tls.cert_file with a valid X.509 certificate"}}
		}
	}
	names := append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	checks := []service.Check{{Subject: subject, Name: "certificate and key load as a pair", OK: true,
		Detail: fmt.Sprintf("%s, for %s", leaf.Subject, listOrNone(names))}}
	valid := service.Check{Subject: subject, Name: "certificate valid now", OK: !now.Before(leaf.NotBefore) && !now.After(leaf.NotAfter),
		Detail: fmt.Sprintf("from %s until %s", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))}
	switch {
	case now.After(leaf.NotAfter):
		valid.Detail = fmt.Sprintf("expired %s ago (%s)", now.Sub(leaf.NotAfter).Round(time.Second), leaf.NotAfter.UTC().Format(time.RFC3339))
		valid.Fix = "renew the certificate and replace tls.cert_file and tls.key_file: usher re-reads them when they change, without a restart"
	case now.Before(leaf.NotBefore):
		valid.Detail = fmt.Sprintf("not valid before %s (in %s)", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotBefore.Sub(now).Round(time.Second))
		valid.Fix = "check the clock of this machine and of the CA that issued the certificate"
	}
	return append(checks, valid)
}

// clientCACheck: client_ca_file holds at least one PEM certificate, as
// usher serve requires for mTLS.
func clientCACheck(subject string, caPEM []byte) service.Check {
	var subjects []string
	for rest := caPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			subjects = append(subjects, cert.Subject.String())
		}
	}
	c := service.Check{Subject: subject, Name: "tls.client_ca_file holds CA certificates", OK: len(subjects) > 0,
		Detail: fmt.Sprintf("%d: %s", len(subjects), strings.Join(subjects, "; "))}
	if !c.OK {
		c.Detail = "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file"
		c.Fix = "tls.client_ca_file must hold the PEM certificates of the CAs that issue your clients' certificates (mTLS)"
	}
	return c
}

// checkJSON is one check in doctor --json.
type checkJSON struct {
	Subject string `json:"subject"`
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Detail  string `json:"detail"`
	Fix     string `json:"fix,omitempty"`
}

// printChecksJSON is doctor's report for programs; it returns how many
// checks failed.
func printChecksJSON(w io.Writer, target string, checks []service.Check) (int, error) {
	report := struct {
		Target   string      `json:"target"`
		OK       bool        `json:"ok"`
		Problems int         `json:"problems"`
		Checks   []checkJSON `json:"checks"`
	}{Target: target, Checks: []checkJSON{}}
	for _, c := range checks {
		if !c.OK {
			report.Problems++
		}
		if c.OK {
			c.Fix = "" // a fix is for a failed check
		}
		report.Checks = append(report.Checks, checkJSON(c))
	}
	report.OK = report.Problems == 0
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return report.Problems, enc.Encode(report)
}
