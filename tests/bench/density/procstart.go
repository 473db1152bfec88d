package benchdensity

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
)

// ProcStart is what starting a process costs on the node: samples of
// /bin/true run to its exit, and of esb-bridge answering VERSION (the Go
// runtime's start, package inits, no work), taken in turns. A CNI ADD is
// one such start of esb-bridge plus its work, so setting ADD's growth
// with the live workers beside this one's tells the machine's share of
// it from esbnet's.
type ProcStart struct {
	True, Plugin benchstat.Samples
}

// procStartTimeout bounds one process start.
const procStartTimeout = 30 * time.Second

// MeasureProcStart starts /bin/true and plugin (with CNI_COMMAND=VERSION)
// n times each, in turns.
func MeasureProcStart(truePath, plugin string, n int) (*ProcStart, error) {
	p := &ProcStart{}
	for range n {
		for _, c := range []struct {
			argv []string
			into *benchstat.Samples
		}{{[]string{truePath}, &p.True}, {[]string{plugin}, &p.Plugin}} {
			d, err := timeStart(c.argv)
			if err != nil {
				return nil, err
			}
			*c.into = append(*c.into, d)
		}
	}
	return p, nil
}

// timeStart runs argv to its exit with a CNI VERSION request on stdin and
// returns how long that took.
func timeStart(argv []string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), procStartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = bytes.NewReader([]byte(`{"cniVersion":"1.1.0"}`))
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("run %s: %w: %s", argv[0], err, bytes.TrimSpace(out))
	}
	return d, nil
}

// Cell renders the p50s as "true / esb-bridge VERSION" in milliseconds.
func (p *ProcStart) Cell() string {
	if p == nil || len(p.True) == 0 || len(p.Plugin) == 0 {
		return "–"
	}
	return benchstat.MsN(p.True.P50(), 1) + " / " + benchstat.MsN(p.Plugin.P50(), 1)
}

// IdleChild is a process of StartIdle's: it waits until its stdin, the
// starter's pipe, closes (so the children end with the starter, even one
// that is killed), then exits.
func IdleChild() {
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// StartIdle starts n idle processes of bin (with env added, which must
// make bin call IdleChild), all reading one pipe, and returns stop, which
// closes the pipe and waits for every child to end. Call stop also when
// err is not nil: it ends those that started.
func StartIdle(bin string, env []string, n int) (stop func(), err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return func() {}, err
	}
	// The children hold the reading end; this process needs only the
	// writing one.
	defer func() { _ = r.Close() }()
	var cmds []*exec.Cmd
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = w.Close()
			for _, c := range cmds {
				_ = c.Wait()
			}
		})
	}
	for range n {
		c := exec.Command(bin)
		c.Env = append(os.Environ(), env...)
		c.Stdin = r
		if err := c.Start(); err != nil {
			return stop, fmt.Errorf("start idle process %d of %d: %w", len(cmds)+1, n, err)
		}
		cmds = append(cmds, c)
	}
	return stop, nil
}
