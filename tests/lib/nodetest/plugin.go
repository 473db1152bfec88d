package nodetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// PluginCall is one run of a CNI plugin binary the way a runtime execs it:
// found by its type in Path (CNI_PATH), with the CNI_* variables in its
// environment and the network configuration on its standard input.
type PluginCall struct {
	Type        string // the plugin's type: its binary's name in Path
	Path        string // CNI_PATH
	Command     string // CNI_COMMAND: ADD, DEL, CHECK
	ContainerID string
	NetNS       string   // CNI_NETNS
	IfName      string   // CNI_IFNAME
	Env         []string // more variables, such as PATH
	Conf        []byte   // the network configuration
	// In, when not nil, runs start, which starts the plugin: a namespace's
	// Do, so that the plugin starts in that namespace as the runtime's
	// would.
	In func(start func() error) error
}

// PluginEnd is how a PluginCall ended.
type PluginEnd struct {
	State          *os.ProcessState
	Ran            time.Duration // from the start to the exit
	Stdout, Stderr []byte
}

// Killed reports whether the plugin died of SIGKILL.
func (e PluginEnd) Killed() bool {
	ws, ok := e.State.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// KillAfter runs the call and sends the plugin SIGKILL after delay unless
// it has exited by then. The error is for a plugin that could not be
// started, killed or waited for; how the plugin itself ended is in the
// PluginEnd.
func (c PluginCall) KillAfter(delay time.Duration) (PluginEnd, error) {
	bin := filepath.Join(c.Path, c.Type)
	cmd := exec.Command(bin)
	cmd.Env = append([]string{
		"CNI_COMMAND=" + c.Command,
		"CNI_CONTAINERID=" + c.ContainerID,
		"CNI_NETNS=" + c.NetNS,
		"CNI_IFNAME=" + c.IfName,
		"CNI_PATH=" + c.Path,
	}, c.Env...)
	cmd.Stdin = bytes.NewReader(c.Conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	in := c.In
	if in == nil {
		in = func(start func() error) error { return start() }
	}
	var start time.Time
	err := in(func() error {
		start = time.Now()
		return cmd.Start()
	})
	if err != nil {
		return PluginEnd{}, fmt.Errorf("start %s: %w", bin, err)
	}
	type ended struct {
		err error
		at  time.Time
	}
	done := make(chan ended, 1)
	go func() {
		err := cmd.Wait()
		done <- ended{err, time.Now()}
	}()
	var end ended
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case end = <-done:
	case <-timer.C:
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return PluginEnd{}, fmt.Errorf("kill %s: %w", bin, err)
		}
		end = <-done
	}
	if cmd.ProcessState == nil {
		return PluginEnd{}, fmt.Errorf("wait for %s: %w", bin, end.err)
	}
	return PluginEnd{State: cmd.ProcessState, Ran: end.at.Sub(start), Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}, nil
}
