package main

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestReapCollectsExitedChildren starts children that exit at once and
// checks that reap collects them (they are zombies until it does).
func TestReapCollectsExitedChildren(t *testing.T) {
	var pids []int
	for range 3 {
		cmd := exec.Command("true")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start true: %v", err)
		}
		pids = append(pids, cmd.Process.Pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	got := 0
	for got < len(pids) && time.Now().Before(deadline) {
		got += reap()
		time.Sleep(10 * time.Millisecond)
	}
	if got != len(pids) {
		t.Fatalf("reaped %d children, want %d", got, len(pids))
	}
	for _, pid := range pids {
		if _, err := syscall.Wait4(pid, nil, syscall.WNOHANG, nil); !errors.Is(err, syscall.ECHILD) {
			t.Errorf("child %d still waitable after reap (err %v)", pid, err)
		}
	}
	if n := reap(); n != 0 {
		t.Errorf("reap with no exited child collected %d", n)
	}
}

// TestWaitReturnsOnTerm feeds wait SIGCHLDs, which it must survive, then
// SIGTERM, which it must return.
func TestWaitReturnsOnTerm(t *testing.T) {
	sigs := make(chan os.Signal, 4)
	sigs <- syscall.SIGCHLD
	sigs <- syscall.SIGCHLD
	sigs <- syscall.SIGTERM
	done := make(chan os.Signal, 1)
	go func() { done <- wait(sigs) }()
	select {
	case s := <-done:
		if s != syscall.SIGTERM {
			t.Fatalf("wait returned %v, want SIGTERM", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return on SIGTERM")
	}
}
