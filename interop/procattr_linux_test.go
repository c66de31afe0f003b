package interop

import (
	"os/exec"
	"syscall"
)

// dieWithTest has the kernel send SIGTERM to the child when the test binary
// dies without its cleanups (a panic, a -timeout, a kill): no usher or
// provider outlives the run.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
