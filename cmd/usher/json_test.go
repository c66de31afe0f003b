package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// TestJSON_EveryDataCommand: every command whose output is data takes
// --json (serve and dev print logs and a banner, not data).
func TestJSON_EveryDataCommand(t *testing.T) {
	for _, c := range commands {
		if c.name == "serve" || c.name == "dev" {
			continue
		}
		var help bytes.Buffer
		err := c.run(context.Background(), []string{"-h"}, strings.NewReader(""), io.Discard, &help)
		if !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "-json") {
			t.Errorf("usher %s -h: %v; its flags lack --json:\n%s", c.name, err, help.String())
		}
	}
}

// TestJSON_MintProofRevoke: mint --json is the token endpoint's answer,
// proof --json the proof with its key's thumbprint, revoke --json a
// confirmation, each one JSON document on stdout.
func TestJSON_MintProofRevoke(t *testing.T) {
	b, _, _, _ := startDevInProcess(t)
	out, err := runCmd(t, "mint", "--addr", b.addr, "--json", "--audience", "api/invoices", "--scope", "invoices.read", "--ttl", "10m")
	var tr map[string]any
	if err != nil || json.Unmarshal([]byte(out), &tr) != nil {
		t.Fatalf("mint --json: %v\n%s", err, out)
	}
	tok, _ := tr["access_token"].(string)
	if strings.Count(tok, ".") != 2 || tr["token_type"] != "Bearer" || tr["expires_in"] != float64(600) || tr["scope"] != "invoices.read" || len(tr) != 4 {
		t.Errorf("mint --json: %v", tr)
	}
	if out, err := runCmd(t, "validate", "--addr", b.addr, "--audience", "api/invoices", tok); err != nil || !strings.HasPrefix(out, "VALID") {
		t.Errorf("the token of mint --json: %v\n%s", err, out)
	}

	key := filepath.Join(t.TempDir(), "dpop.pem")
	if _, err := runCmd(t, "mint", "--addr", b.addr, "--audience", "api/invoices", "--dpop-key", key); err != nil {
		t.Fatal(err)
	}
	out, err = runCmd(t, "proof", "--json", "--key", key, "--method", "GET", "--uri", "https://api.example.com/invoices")
	var pr map[string]string
	if err != nil || json.Unmarshal([]byte(out), &pr) != nil || strings.Count(pr["dpop"], ".") != 2 || len(pr["jkt"]) != 43 || pr["alg"] != "ES256" {
		t.Errorf("proof --json: %v\n%s", err, out)
	}

	opaque, err := runCmd(t, "mint", "--addr", b.addr, "--opaque", "--audience", "api/users")
	if err != nil {
		t.Fatal(err)
	}
	out, err = runCmd(t, "revoke", "--addr", b.addr, "--json", strings.TrimSpace(opaque))
	var rr map[string]any
	jerr := json.Unmarshal([]byte(out), &rr)
	endpoint, _ := rr["revocation_endpoint"].(string)
	if err != nil || jerr != nil || rr["revoked"] != true || !strings.HasSuffix(endpoint, "/revoke") {
		t.Errorf("revoke --json: %v\n%s", err, out)
	}
}
