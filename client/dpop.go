package client

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/usher-dev/usher/internal/reasons"
)

// DPoPAlgs are the proof algorithms the interceptors announce in their DPoP
// challenge (RFC 9449 §7.1), the asymmetric algorithms usher accepts.
const DPoPAlgs = reasons.DPoPAlgorithms

// DPoPSigner makes DPoP proofs (RFC 9449): a fresh JWT per request, signed
// with the caller's key, whose public key (its jwk header) the issuer binds
// the access token to. Safe for concurrent use.
type DPoPSigner struct {
	key    crypto.Signer
	alg    string
	hash   crypto.Hash // 0 for EdDSA, which hashes itself
	size   int         // ECDSA: the length of r and of s in the JOSE signature
	header string      // base64url of the JOSE header, the same for every proof
	thumb  string
	now    func() time.Time
}

// DPoPSignerOption configures a DPoPSigner.
type DPoPSignerOption func(*DPoPSigner)

// WithProofClock sets the clock of the proofs' iat (tests).
func WithProofClock(now func() time.Time) DPoPSignerOption {
	return func(s *DPoPSigner) { s.now = now }
}

// NewDPoPSigner makes proofs with key: ECDSA P-256 (ES256), P-384 (ES384) or
// P-521 (ES512), Ed25519 (EdDSA) or RSA of at least 2048 bits (PS256). Any
// crypto.Signer whose Public is one of those works, so a key in a KMS or an
// HSM can sign. Keep one key per process (or per client): the issuer binds
// the tokens to it.
func NewDPoPSigner(key crypto.Signer, opts ...DPoPSignerOption) (*DPoPSigner, error) {
	if key == nil {
		return nil, errors.New("usher dpop: nil key")
	}
	s := &DPoPSigner{key: key, now: time.Now}
	var jwk any
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		var crv string
		switch pub.Curve {
		case elliptic.P256():
			s.alg, s.hash, s.size, crv = "ES256", crypto.SHA256, 32, "P-256"
		case elliptic.P384():
			s.alg, s.hash, s.size, crv = "ES384", crypto.SHA384, 48, "P-384"
		case elliptic.P521():
			s.alg, s.hash, s.size, crv = "ES512", crypto.SHA512, 66, "P-521"
		default:
			return nil, fmt.Errorf("usher dpop: ECDSA curve %s: use P-256, P-384 or P-521", pub.Curve.Params().Name)
		}
		point, err := pub.Bytes() // 0x04 || x || y, each of the curve's fixed length (RFC 7518 §6.2.1.2)
		if err != nil {
			return nil, fmt.Errorf("usher dpop: ECDSA public key: %w", err)
		}
		jwk = ecJWK{Crv: crv, Kty: "EC", X: b64(point[1 : 1+s.size]), Y: b64(point[1+s.size:])}
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("usher dpop: Ed25519 public key of %d bytes", len(pub))
		}
		s.alg = "EdDSA"
		jwk = okpJWK{Crv: "Ed25519", Kty: "OKP", X: b64(pub)}
	case *rsa.PublicKey:
		if pub.N == nil || pub.N.BitLen() < 2048 {
			return nil, errors.New("usher dpop: RSA key shorter than 2048 bits")
		}
		s.alg, s.hash = "PS256", crypto.SHA256
		jwk = rsaJWK{E: b64(big.NewInt(int64(pub.E)).Bytes()), Kty: "RSA", N: b64(pub.N.Bytes())}
	default:
		return nil, fmt.Errorf("usher dpop: key type %T: use ECDSA (P-256, P-384, P-521), Ed25519 or RSA", pub)
	}
	// The members in lexicographic order without white space: the header's
	// jwk is also the RFC 7638 thumbprint input.
	canon, err := json.Marshal(jwk)
	if err != nil {
		return nil, fmt.Errorf("usher dpop: %w", err)
	}
	sum := sha256.Sum256(canon)
	s.thumb = b64(sum[:])
	header, err := json.Marshal(struct {
		Typ string          `json:"typ"`
		Alg string          `json:"alg"`
		JWK json.RawMessage `json:"jwk"`
	}{"dpop+jwt", s.alg, canon})
	if err != nil {
		return nil, fmt.Errorf("usher dpop: %w", err)
	}
	s.header = b64(header)
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Public JWK members only, in lexicographic order (RFC 7638 §3.2).
type ecJWK struct {
	Crv string `json:"crv"`
	Kty string `json:"kty"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

type okpJWK struct {
	Crv string `json:"crv"`
	Kty string `json:"kty"`
	X   string `json:"x"`
}

type rsaJWK struct {
	E   string `json:"e"`
	Kty string `json:"kty"`
	N   string `json:"n"`
}

// Algorithm is the proofs' JWS alg (ES256, ES384, ES512, EdDSA or PS256).
func (s *DPoPSigner) Algorithm() string { return s.alg }

// Thumbprint is the RFC 7638 SHA-256 thumbprint of the public key, in
// base64url: the cnf.jkt of the tokens bound to this key.
func (s *DPoPSigner) Thumbprint() string { return s.thumb }

// Proof returns a DPoP proof for one request: method and uri are the HTTP
// method and target URI (query and fragment are dropped, as RFC 9449 §4.2
// says htu has none); accessToken, when not empty, is bound by its hash
// (ath), as a resource server requires. Make a new proof for every request:
// usher refuses a proof it has seen.
func (s *DPoPSigner) Proof(method, uri, accessToken string) (string, error) {
	return s.proof(method, uri, accessToken, "")
}

type proofClaims struct {
	JTI   string `json:"jti"`
	HTM   string `json:"htm"`
	HTU   string `json:"htu"`
	IAT   int64  `json:"iat"`
	ATH   string `json:"ath,omitempty"`
	Nonce string `json:"nonce,omitempty"`
}

func (s *DPoPSigner) proof(method, uri, accessToken, nonce string) (string, error) {
	if method == "" {
		return "", errors.New("usher dpop: empty HTTP method")
	}
	htu, err := proofURI(uri)
	if err != nil {
		return "", err
	}
	jti := make([]byte, 16) // 128 random bits: unique per proof (RFC 9449 §11.1)
	_, _ = rand.Read(jti)   // never fails (crypto/rand, Go 1.24+)
	c := proofClaims{JTI: b64(jti), HTM: method, HTU: htu, IAT: s.now().Unix(), Nonce: nonce}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		c.ATH = b64(sum[:])
	}
	var payload bytes.Buffer
	enc := json.NewEncoder(&payload)
	enc.SetEscapeHTML(false) // htu as it is, "&" not "\u0026"
	if err := enc.Encode(c); err != nil {
		return "", fmt.Errorf("usher dpop: %w", err)
	}
	input := s.header + "." + b64(bytes.TrimSuffix(payload.Bytes(), []byte("\n")))
	sig, err := s.sign([]byte(input))
	if err != nil {
		return "", fmt.Errorf("usher dpop: signing the proof with %s: %w", s.alg, err)
	}
	return input + "." + b64(sig), nil
}

// sign returns the JWS signature of input: r||s of fixed length for ECDSA
// (RFC 7518 §3.4), not the ASN.1 form crypto.Signer returns.
func (s *DPoPSigner) sign(input []byte) ([]byte, error) {
	if s.hash == 0 {
		return s.key.Sign(rand.Reader, input, crypto.Hash(0))
	}
	h := s.hash.New()
	h.Write(input)
	digest := h.Sum(nil)
	if s.alg == "PS256" {
		return s.key.Sign(rand.Reader, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: s.hash})
	}
	der, err := s.key.Sign(rand.Reader, digest, s.hash)
	if err != nil {
		return nil, err
	}
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(der, &rs); err != nil || len(rest) > 0 {
		return nil, errors.New("the signer's ECDSA signature is not ASN.1 (r, s)")
	}
	if rs.R.Sign() <= 0 || rs.S.Sign() <= 0 || rs.R.BitLen() > 8*s.size || rs.S.BitLen() > 8*s.size {
		return nil, errors.New("the signer's ECDSA signature is out of range for the curve")
	}
	out := make([]byte, 2*s.size)
	rs.R.FillBytes(out[:s.size])
	rs.S.FillBytes(out[s.size:])
	return out, nil
}

// proofURI is uri without query and fragment; it must be absolute
// (scheme and host), as the request it stands for.
func proofURI(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("usher dpop: htu: %w", err)
	}
	if u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("usher dpop: htu %q is not an absolute URI like https://api.example.com/path", uri)
	}
	// Cut rather than re-encoded: the URI stays as the caller spelt it.
	uri, _, _ = strings.Cut(uri, "#")
	uri, _, _ = strings.Cut(uri, "?")
	return uri, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
