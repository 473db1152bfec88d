// Command worker is the esbnet test worker: the program inside the worker
// image that the agent's end-to-end tests and the demo start through
// containerd or Docker. It serves the invoke endpoint of the AWS Lambda
// runtime interface emulator,
//
//	POST /2015-03-31/functions/function/invocations
//
// on :$PORT (default 8080), and answers
//
//	{"echo": <payload>, "hostname": "...", "env": {"ESB_...": "..."}}
//
// where the payload is echoed as JSON when it parses and as a string
// otherwise. When the payload is a JSON object with a "fetch" URL, the
// worker GETs it (5 s timeout) and adds {"fetch": {"status": N, "body": "..."}}
// or {"fetch": {"error": "..."}}: that is how a test proves a worker's call
// through the gateway 10.88.0.1 to the local proxy. GET /healthz answers 200.
//
// Flags: -version prints the version and exits; -selftest runs one health
// check and one invoke in memory, prints the answer and exits 0 when both
// pass, which proves the image runs under a runtime even with no network.
//
// ESB_WORKER_EXIT=N makes the worker write two lines and exit with status
// N before it listens: an image that dies before its port opens, for the
// end-to-end test of the agent's readiness wait.
//
// The image is built statically (CGO_ENABLED=0) from scratch by
// scripts/worker-image.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/edge-serverless-box/esbnet/internal/buildinfo"
)

func main() {
	version := flag.Bool("version", false, "print the version and exit")
	selftest := flag.Bool("selftest", false, "check the handlers in memory, print the answer and exit")
	flag.Parse()

	if *version {
		fmt.Println(buildinfo.About("esb-worker"))
		return
	}
	w := newWorker(os.Environ())
	if *selftest {
		out, err := w.selfTest()
		if err != nil {
			fmt.Fprintf(os.Stderr, "esb-worker: selftest: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("%s\nesb-worker: selftest ok\n", out)
		return
	}

	if s := os.Getenv("ESB_WORKER_EXIT"); s != "" {
		code, err := strconv.Atoi(s)
		if err != nil || code < 0 || code > 255 {
			log.Fatalf("esb-worker: ESB_WORKER_EXIT=%q: want an exit status from 0 to 255", s)
		}
		fmt.Println("esb-worker: starting")
		fmt.Fprintf(os.Stderr, "esb-worker: exiting with status %d before listening (ESB_WORKER_EXIT)\n", code)
		os.Exit(code)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, net.JoinHostPort("", port), w.handler()); err != nil {
		log.Fatalf("esb-worker: %v", err)
	}
}

// serve runs the HTTP server on addr until ctx ends, then shuts it down
// within a few seconds.
func serve(ctx context.Context, addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("esb-worker %s listening on %s", buildinfo.Version, addr)
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}
