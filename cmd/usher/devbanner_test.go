package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
)

// TestDevBanner_AddrOnlyWhenNotDefault: on the default address the
// banner's usher commands carry no --addr; on any other, every command
// that calls usher carries it.
func TestDevBanner_AddrOnlyWhenNotDefault(t *testing.T) {
	iss := testkit.DevIssuer(t)
	var def bytes.Buffer
	printDevBanner(&def, defaultAddr, "", iss, "/tmp/usher-dev-x", nil)
	if strings.Contains(def.String(), "--addr") {
		t.Errorf("banner on the default address names --addr:\n%s", def.String())
	}
	const other = "127.0.0.1:50999"
	var b bytes.Buffer
	printDevBanner(&b, other, "", iss, "/tmp/usher-dev-x", nil)
	calls := regexp.MustCompile(`usher (mint|validate|inspect|revoke|doctor)\b`).FindAllString(b.String(), -1)
	withAddr := strings.Count(b.String(), " --addr "+other+" ")
	if len(calls) < 6 || withAddr != len(calls) {
		t.Errorf("%d usher commands, %d with --addr %s; want all:\n%s", len(calls), withAddr, other, b.String())
	}
	for _, want := range []string{"-plaintext -d @ " + other + " ", "-c 50 " + other + "\n", "-D /tmp/usher-dev-x/" + devValidReq} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}
}

// TestBinary_DevBannerCommandsWork runs `usher dev` on a port that is not
// the default and then every usher command its banner prints, as printed,
// through bash with the built binary first on PATH. The commands read
// the tokens from 0600 files of a 0700 directory that is gone once usher
// dev stops; the banner prints each API's JWT once, at its end.
func TestBinary_DevBannerCommandsWork(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildUsher(t)
	b, banner, _, stop := startDevInProcess(t)
	checkDevFiles(t, b.dir, banner)
	cmdRE := regexp.MustCompile(`(?m)^(?:  |[A-Za-z][A-Za-z -]*:\s+)(usher \S+ --addr .*?)(?:   \(.*)?$`)
	want := []struct{ prefix, out string }{
		{"usher validate --addr " + b.addr + " --audience api/users - <", "VALID"},
		{"usher validate --addr " + b.addr + " --audience api/invoices - <", "AUDIENCE_MISMATCH"},
		{"usher validate --addr " + b.addr + " --audience api/users - <", "VALID"},
		{"usher revoke --addr " + b.addr + " - <", ""},
		{"usher mint --addr " + b.addr + " --audience api/invoices --scope invoices.read", "eyJ"},
		{"usher mint --addr " + b.addr + " --audience api/invoices --dpop-key dpop.pem", "eyJ"},
		{"usher validate --addr " + b.addr + " --audience api/invoices TOKEN", ""}, // a placeholder: not run
	}
	found := cmdRE.FindAllStringSubmatch(banner, -1)
	if len(found) != len(want) {
		t.Fatalf("%d usher commands in the banner, want %d:\n%s", len(found), len(want), banner)
	}
	work := t.TempDir()
	for i, m := range found {
		line := m[1]
		if !strings.HasPrefix(line, want[i].prefix) {
			t.Errorf("command %d: %q, want it to start with %q", i, line, want[i].prefix)
			continue
		}
		if strings.HasSuffix(line, " TOKEN") {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		cmd := exec.CommandContext(ctx, "bash", "-c", line)
		cmd.Dir, cmd.Env = work, append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		_ = cmd.Run() // validate exits 1 on AUDIENCE_MISMATCH: the output says which
		cancel()
		if !strings.HasPrefix(out.String(), want[i].out) || (want[i].out == "" && !strings.HasPrefix(errOut.String(), "usher revoke: revoked at")) {
			t.Errorf("$ %s\nstdout:\n%s\nstderr:\n%s\nwant stdout starting %q", line, &out, &errOut, want[i].out)
		}
	}
	stop()
	if _, err := os.Stat(b.dir); !os.IsNotExist(err) {
		t.Errorf("usher dev left %s behind: %v", b.dir, err)
	}
}

// checkDevFiles: the token directory is 0700, each file 0600; the banner
// prints each API's JWT once (the contract's "a token per API"), and the
// opaque token not at all.
func checkDevFiles(t *testing.T, dir, banner string) {
	t.Helper()
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("token directory %s: %v, %v; want mode 0700", dir, st.Mode().Perm(), err)
	}
	for _, name := range []string{devUsersJWT, devInvoicesJWT, devUsersOpaque, devValidReq, devMismatchReq, devOpaqueReq} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v; want mode 0600", name, err)
		}
	}
	for name, times := range map[string]int{devUsersJWT: 1, devInvoicesJWT: 1, devUsersOpaque: 0} {
		if tok := readTokenFile(t, dir, name); len(tok) < 20 || strings.Count(banner, tok) != times {
			t.Errorf("the token of %s (%d bytes) is printed %d times in the banner, want %d", name, len(tok), strings.Count(banner, tok), times)
		}
	}
}
