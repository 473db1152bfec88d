// Command pause is esbnet's pod sandbox ("pause") container: the first
// process of a Kubernetes pod under containerd's CRI plugin, which holds the
// pod's namespaces while the pod's containers come and go. It does nothing
// but wait: it reaps the zombies it inherits as PID 1 of the pod's PID
// namespace, and exits 0 on SIGINT or SIGTERM.
//
// It exists so that a node without internet access (and the CRI test in
// tests/daemon/critest) has a sandbox image built from source, the way
// registry.k8s.io/pause is: scripts/pause-image.sh builds it statically
// into an OCI image with no base layer and pushes it to the local registry
// as 127.0.0.1:5000/esb/pause:latest.
//
// Flags: -version prints the version and exits.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/edge-serverless-box/esbnet/internal/buildinfo"
)

func main() {
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		fmt.Println(buildinfo.About("esb-pause"))
		return
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	fmt.Fprintln(os.Stderr, "esb-pause: exited on", wait(sigs))
}

// wait reaps children on every SIGCHLD from sigs and returns the first
// other signal (SIGINT or SIGTERM) it receives.
func wait(sigs <-chan os.Signal) os.Signal {
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return s
		}
		reap()
	}
	return nil
}

// reap collects every child that has exited, without blocking, and
// returns how many it collected.
func reap() int {
	n := 0
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return n
		}
		n++
	}
}
