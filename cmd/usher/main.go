// Command usher is the central token-validation service and its tools.
//
//	usher serve --config FILE      the service
//	usher dev [--listen ADDR]      the zero-set-up default: embedded dev issuer + validator on loopback
//	usher mint --audience A ...    a dev token from the running `usher dev`
//	usher validate --audience A TOKEN
//	usher inspect TOKEN
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
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
		fmt.Fprintln(stderr, "usher:", ue.msg)
		return 2
	default:
		fmt.Fprintln(stderr, "usher:", err)
		return 1
	}
}

const usage = `usher: a central gRPC token-validation service that says exactly why a token is rejected.

Commands:
  usher serve --config FILE                  serve usher.v1.TokenService with the given config
  usher dev [--listen 127.0.0.1:50051]       embedded dev issuer and validator on loopback, no config
  usher mint --audience A [--scope S]...     a dev token from the running usher dev (stdout alone)
             [--ttl D] [--kid K]
  usher validate --audience A [--scope S]... TOKEN
                                             ask a running usher; exit 0 only when valid
  usher inspect TOKEN                        decode a token and show what usher makes of it
  usher doctor --config FILE | --addr ADDR   check issuers, keys and audiences for real; exit 1 on a problem

Client commands take --addr (default 127.0.0.1:50051) and --json; a TOKEN of - reads stdin.
Run "usher COMMAND -h" for a command's flags.
`

// run is the whole program; main only wires signals and the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "mint":
		return runMint(ctx, rest, stdout, stderr)
	case "validate":
		return runValidate(ctx, rest, stdin, stdout, stderr)
	case "inspect":
		return runInspect(ctx, rest, stdin, stdout, stderr)
	case "doctor":
		return runDoctor(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
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
