// Command usher is the central token-validation service and its tools.
//
//	usher serve --config FILE                   serve usher.v1.TokenService with the given config
//	usher dev [--listen 127.0.0.1:50051] [--http-listen 127.0.0.1:50080] [--issuer-listen 127.0.0.1:0]
//	                                            embedded dev issuer and validator on loopback, no config
//	usher mint --audience A [--scope S]... [--ttl D] [--kid K] [--opaque] [--dpop-key FILE]
//	                                            a dev token from the running usher dev (stdout alone)
//	usher proof --key FILE --method M --uri U [--token T]
//	                                            a fresh DPoP proof signed with the key in FILE (stdout alone)
//	usher revoke TOKEN                          revoke an opaque dev token at the running usher dev's issuer
//	usher validate --audience A [--scope S]... [--dpop-proof P --method M --uri U] TOKEN
//	                                            ask a running usher; exit 0 only when valid
//	usher inspect TOKEN                         decode a token and show what usher makes of it
//	usher doctor --config FILE | --addr ADDR    check issuers, keys and audiences for real; exit 1 on a problem
//
// The list is the commands table below, as "usher help" prints it (a test
// keeps the two equal). Client commands take --addr (default $USHER_ADDR,
// else 127.0.0.1:50051), the TLS flags --cacert, --cert, --key,
// --servername, --plaintext and --tls (or USHER_CACERT, USHER_CERT,
// USHER_KEY, USHER_SERVERNAME), and --json; a TOKEN of - reads stdin.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// errNotValid: the token was answered with a rejection (exit 1, the verdict
// was already printed).
var errNotValid = errors.New("token not valid")

// usageError: bad flags or arguments (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNotValid), errors.Is(err, errChecksFailed):
		return 1
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "usher:", printableLines(ue.msg))
		return 2
	default:
		fmt.Fprintln(stderr, "usher:", printableLines(err.Error()))
		return 1
	}
}

// printableLines escapes each line of an error (a config value may hold
// anything), keeping one problem a line.
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return strings.Join(lines, "\n")
}

// command is one subcommand: the commands table below drives dispatch, the
// usage text and (checked by a test) the package documentation.
type command struct {
	name     string
	synopsis string // how it is called
	summary  string // what it does, one line
	run      func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

var commands = []command{
	{"serve", "usher serve --config FILE", "serve usher.v1.TokenService with the given config",
		func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
			return runServe(ctx, args, stdout, stderr)
		}},
	{"dev", "usher dev [--listen 127.0.0.1:50051] [--http-listen 127.0.0.1:50080] [--issuer-listen 127.0.0.1:0]", "embedded dev issuer and validator on loopback, no config",
		func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
			return runDev(ctx, args, stdout, stderr)
		}},
	{"mint", "usher mint --audience A [--scope S]... [--ttl D] [--kid K] [--opaque] [--dpop-key FILE]", "a dev token from the running usher dev (stdout alone)",
		func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
			return runMint(ctx, args, stdout, stderr)
		}},
	{"proof", "usher proof --key FILE --method M --uri U [--token T]", "a fresh DPoP proof signed with the key in FILE (stdout alone)", runProof},
	{"revoke", "usher revoke TOKEN", "revoke an opaque dev token at the running usher dev's issuer", runRevoke},
	{"validate", "usher validate --audience A [--scope S]... [--dpop-proof P --method M --uri U] TOKEN", "ask a running usher; exit 0 only when valid", runValidate},
	{"inspect", "usher inspect TOKEN", "decode a token and show what usher makes of it", runInspect},
	{"doctor", "usher doctor --config FILE | --addr ADDR", "check issuers, keys and audiences for real; exit 1 on a problem",
		func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
			return runDoctor(ctx, args, stdout, stderr)
		}},
}

// synopsisWidth is the column the summaries start at in the command list.
const synopsisWidth = 44

// commandList is the command table as text, one command a line (a long
// synopsis puts its summary on the next line).
func commandList(indent string) string {
	var b strings.Builder
	for _, c := range commands {
		if len(c.synopsis) < synopsisWidth {
			fmt.Fprintf(&b, "%s%-*s%s\n", indent, synopsisWidth, c.synopsis, c.summary)
		} else {
			fmt.Fprintf(&b, "%s%s\n%s%*s%s\n", indent, c.synopsis, indent, synopsisWidth, "", c.summary)
		}
	}
	return b.String()
}

func usage() string {
	return "usher: a central gRPC token-validation service that says exactly why a token is rejected.\n\nCommands:\n" +
		commandList("  ") +
		"\nClient commands take --addr (default $USHER_ADDR, else 127.0.0.1:50051), --json, and for a TLS usher\n" +
		"--cacert, --cert, --key, --servername (or USHER_CACERT, USHER_CERT, USHER_KEY, USHER_SERVERNAME);\n" +
		"--plaintext or --tls force one. A TOKEN of - reads stdin.\n" +
		"Run \"usher COMMAND -h\" for a command's flags.\n"
}

// run is the whole program; main only wires signals and the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return usageError{"no command given"}
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage())
		return nil
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, rest, stdin, stdout, stderr)
		}
	}
	fmt.Fprint(stderr, usage())
	return usageError{fmt.Sprintf("unknown command %q", name)}
}

// parseFlags parses flags that may come before or after positional
// arguments ("usher validate TOKEN --audience A" works too).
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// Terminal colours, used only when stdout is a terminal and NO_COLOR is unset.
const (
	red   = "\x1b[31m"
	green = "\x1b[32m"
	bold  = "\x1b[1m"
	reset = "\x1b[0m"
)

func colorOn(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func paint(on bool, color, s string) string {
	if !on {
		return s
	}
	return color + s + reset
}
