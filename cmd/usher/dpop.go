package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/usher-dev/usher/client"
)

// maxKeyFileBytes bounds what a DPoP key file may hold: a PEM RSA 8192 key
// is under 7 KiB.
const maxKeyFileBytes = 64 << 10

// dpopSigner reads the DPoP key in path and makes its proof signer. When
// create is set and path does not exist, it writes a fresh P-256 key there
// (0600) and reports created.
func dpopSigner(path string, create bool) (s *client.DPoPSigner, created bool, err error) {
	key, err := readDPoPKey(path)
	if errors.Is(err, os.ErrNotExist) && create {
		if key, err = createDPoPKey(path); err != nil {
			return nil, false, err
		}
		created = true
	}
	if err != nil {
		return nil, false, err
	}
	if s, err = client.NewDPoPSigner(key); err != nil {
		return nil, false, fmt.Errorf("DPoP key %s: %w", printable(path), err)
	}
	return s, created, nil
}

// readDPoPKey reads a private key from a PEM file (PKCS#8, SEC 1 "EC
// PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY") or a JWK JSON file.
func readDPoPKey(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("DPoP key: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("DPoP key: %w", err)
	}
	if len(b) > maxKeyFileBytes {
		return nil, fmt.Errorf("DPoP key %s: over %d KiB, not a key file", printable(path), maxKeyFileBytes>>10)
	}
	var key any
	if trimmed := bytes.TrimSpace(b); bytes.HasPrefix(trimmed, []byte("{")) {
		key, err = jwkPrivateKey(trimmed)
	} else {
		key, err = pemPrivateKey(b)
	}
	if err != nil {
		return nil, fmt.Errorf("DPoP key %s: %w", printable(path), err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("DPoP key %s: a %T cannot sign: use an EC P-256 or P-384, Ed25519 or RSA private key", printable(path), key)
	}
	return signer, nil
}

func jwkPrivateKey(b []byte) (any, error) {
	k, err := jwk.ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("not a JWK: %w", err)
	}
	if private, err := jwk.IsPrivateKey(k); err != nil || !private {
		return nil, errors.New("the JWK is a public (or symmetric) key: the file must hold the private key, which signs the proofs")
	}
	var raw any
	if err := jwk.Export(k, &raw); err != nil {
		return nil, fmt.Errorf("the JWK: %w", err)
	}
	return raw, nil
}

func pemPrivateKey(b []byte) (any, error) {
	for rest := b; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return nil, errors.New("no PEM private key in it (want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY), nor a JWK")
		}
		switch block.Type {
		case "PRIVATE KEY":
			return x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the key is encrypted: write it unencrypted to a 0600 file, e.g. openssl pkey -in KEY -out dpop.pem")
		case "PUBLIC KEY", "CERTIFICATE":
			return nil, fmt.Errorf("it holds a %s, not the private key that signs the proofs", block.Type)
		}
	}
}

// createDPoPKey writes a fresh P-256 key to path as PKCS#8 PEM, readable
// by its owner only; it never overwrites a file.
func createDPoPKey(path string) (crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("DPoP key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("DPoP key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("DPoP key: %w", err)
	}
	werr := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := errors.Join(werr, f.Close()); err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("DPoP key: write %s: %w", printable(path), err)
	}
	return key, nil
}

// runProof prints one fresh DPoP proof (RFC 9449) for a request: what a
// caller sends in its DPoP header, for curl, grpcurl or a test.
func runProof(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usher proof", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "the DPoP private key (PEM or JWK) the token is bound to, e.g. the --dpop-key of usher mint (required)")
	method := fs.String("method", "", "the HTTP method of the request the proof is for, e.g. GET; POST for a gRPC call (required)")
	uri := fs.String("uri", "", "the request's URI, e.g. https://api.example.com/invoices (query and fragment are dropped); for gRPC https://AUTHORITY/package.Service/Method (required)")
	token := fs.String("token", "", "the access token the proof goes with (its hash becomes ath, as a resource server requires); - reads stdin")
	asJSON := fs.Bool("json", false, `print {"dpop": PROOF, "jkt": the key's thumbprint, "alg": ALG} instead of the proof alone`)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usageError{fmt.Sprintf("proof: unexpected argument %q: the token goes in --token", printable(pos[0]))}
	case *keyFile == "" || *method == "" || *uri == "":
		return usageError{"proof: --key, --method and --uri are required, e.g. usher proof --key dpop.pem --method GET --uri https://api.example.com/invoices --token TOKEN"}
	}
	if *token == "-" {
		if *token, err = readToken([]string{"-"}, stdin); err != nil {
			return err
		}
	}
	s, _, err := dpopSigner(*keyFile, false)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("proof: no key at %s: `usher mint --dpop-key %s --audience A` creates one and mints a token bound to it", printable(*keyFile), printable(*keyFile))
	}
	if err != nil {
		return fmt.Errorf("proof: %w", err)
	}
	p, err := s.Proof(*method, *uri, strings.TrimSpace(*token))
	if err != nil {
		return fmt.Errorf("proof: %w", err)
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(map[string]string{"dpop": p, "jkt": s.Thumbprint(), "alg": s.Algorithm()})
	}
	_, err = fmt.Fprintln(stdout, p)
	return err
}
