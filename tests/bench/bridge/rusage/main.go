// Command rusage runs a program and reports what wait4 says about it: the
// peak resident set size and the CPU time of the program and of the
// children it waited for. The benchmark in tests/bench/bridge runs plugins
// through it because a child that the Go test process starts directly
// inherits the test process's memory until it execs (Go spawns with
// CLONE_VM), and the kernel folds that memory's high-water mark into the
// child's ru_maxrss at exec. This program is small, so its own high-water
// mark (reported too) stays below a plugin's and the plugin's figure is
// its own.
//
// Usage: rusage REPORT PROGRAM [ARG...]
//
// PROGRAM gets this process's environment, stdin, stdout and stderr; its
// exit status becomes this one's. REPORT receives one JSON object.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// peakRSS returns this process's memory's high-water mark in KiB (VmHWM).
// That, not getrusage's ru_maxrss, is what PROGRAM's exec folds into its
// ru_maxrss: ru_maxrss of this process also holds the high-water mark of
// the memory it replaced at its own exec, its parent's.
func peakRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

// Report is what REPORT receives. Sizes are in KiB, times in nanoseconds.
type Report struct {
	SelfMaxRSS  int64 `json:"selfMaxRSS"`  // this program's memory's peak RSS just before starting PROGRAM
	MaxRSS      int64 `json:"maxRSS"`      // PROGRAM's, at least SelfMaxRSS
	UserNanos   int64 `json:"userNanos"`   // PROGRAM's and its waited-for children's
	SystemNanos int64 `json:"systemNanos"` // likewise
	ExitCode    int   `json:"exitCode"`
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: rusage REPORT PROGRAM [ARG...]")
		os.Exit(2)
	}
	code, err := run(os.Args[1], os.Args[2], os.Args[3:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "rusage:", err)
		os.Exit(125)
	}
	os.Exit(code)
}

func run(report, program string, args []string) (int, error) {
	self, err := peakRSS()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(program, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return 0, err
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, errors.New("no rusage for " + program)
	}
	r := Report{
		SelfMaxRSS:  self,
		MaxRSS:      ru.Maxrss,
		UserNanos:   ru.Utime.Nano(),
		SystemNanos: ru.Stime.Nano(),
		ExitCode:    cmd.ProcessState.ExitCode(),
	}
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(report, b, 0o600); err != nil {
		return 0, err
	}
	if r.ExitCode < 0 { // killed by a signal
		return 128, nil
	}
	return r.ExitCode, nil
}
