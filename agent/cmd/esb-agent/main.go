// Command esb-agent is the esb node daemon: it creates workers through
// containerd or Docker (--runtime), attaches them to the esb network, and
// serves acquire/release and the ESB Gateway's calls over gRPC. The logic
// lives in package agent, the settings in conf/agentconf; run with --help
// for them.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	clog "github.com/containerd/log"

	"github.com/edge-serverless-box/esbnet/agent"
	"github.com/edge-serverless-box/esbnet/conf/agentconf"
	"github.com/edge-serverless-box/esbnet/internal/buildinfo"
)

func main() {
	if buildinfo.IsVersionFlag(os.Args) {
		fmt.Println("esb-agent", buildinfo.Version)
		return
	}
	cfg, err := agentconf.Load(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, agentconf.ErrHelp) {
		return
	}
	if errors.Is(err, agentconf.ErrPrintConfig) {
		if err := agentconf.Write(os.Stdout, cfg); err != nil {
			fmt.Fprintln(os.Stderr, "esb-agent:", err)
			os.Exit(1)
		}
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "esb-agent:", err)
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "esb-agent: invalid log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// The containerd client logs through logrus; keep its chatter (such as
	// notes on plain-HTTP registries) out of the agent's JSON log.
	_ = clog.SetLevel("warn")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx, cfg, log); err != nil {
		log.Error("esb-agent failed", "err", err)
		os.Exit(1)
	}
}
