// Command loadgen is the load BenchmarkNATSideBySide runs inside a worker
// namespace (through ip netns exec): one round of sequential connections,
// each with an HTTP request or only the handshake, its results (one per
// address) printed as a JSON array.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	benchnat "github.com/edge-serverless-box/esbnet/tests/bench/nat"
)

func main() {
	var cfg benchnat.LoadConfig
	addrs := flag.String("addr", "", "host:port to connect to; several, comma-separated, are taken in turn")
	flag.StringVar(&cfg.Mode, "mode", benchnat.ModeHTTP, "http: a GET per connection; connect: the handshake only")
	flag.StringVar(&cfg.Path, "path", "/", "request path")
	flag.DurationVar(&cfg.Duration, "duration", 0, "length of the round (at most 1m)")
	flag.IntVar(&cfg.MaxConns, "max", 0, "most connections to make (0: no limit)")
	flag.Int64Var(&cfg.BodySize, "body", 0, "body length every response must have (0: any)")
	flag.DurationVar(&cfg.Timeout, "timeout", 0, "bound of one connection (0: 5s)")
	flag.Parse()
	if *addrs != "" {
		cfg.Addrs = strings.Split(*addrs, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := benchnat.RunLoad(ctx, cfg)
	if err == nil {
		err = json.NewEncoder(os.Stdout).Encode(res)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
}
