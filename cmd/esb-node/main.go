// Command esb-node is the node agent of a Kubernetes cluster whose pod
// network is esb-bridge and esb-ipam: it writes the node's conflist with its
// pod CIDR, keeps a route to every other node's pod CIDR and marks the node's
// network available. The logic lives in cmd/esb-node/nodeagent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/edge-serverless-box/esbnet/cmd/esb-node/nodeagent"
	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/internal/buildinfo"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("esb-node", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server; empty means the in-cluster service account")
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "this node's Node object (default $NODE_NAME)")
	conflist := fs.String("conflist", "/etc/cni/net.d/10-esb.conflist", "conflist to write with the node's pod CIDR")
	cniVersion := fs.String("cni-version", "1.0.0", "cniVersion of the conflist (containerd 1.6 reads up to 1.0.0; 2.x reads 1.1.0)")
	bridge := fs.String("bridge", conf.BridgeName, "esb-bridge's bridge")
	dataDir := fs.String("data-dir", conf.DefaultDataDir, "esb-ipam's store directory")
	proto := fs.Int("route-protocol", nodeagent.DefaultRouteProtocol, "route protocol number marking the routes esb-node owns (1-255); routes without it are never touched")
	resync := fs.Duration("resync", 30*time.Second, "period of a full pass besides the passes on change")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *version {
		fmt.Println("esb-node", buildinfo.Version)
		return 0
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *proto < 1 || *proto > 255 {
		log.Error("--route-protocol must be 1-255", "value", *proto)
		return 2
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Error("load kubeconfig", "err", err)
		return 1
	}
	cfg.UserAgent = "esb-node/" + buildinfo.Version
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Error("make API client", "err", err)
		return 1
	}
	agent, err := nodeagent.New(nodeagent.Config{
		NodeName: *nodeName, ConflistPath: *conflist, CNIVersion: *cniVersion,
		Bridge: *bridge, DataDir: *dataDir, Resync: *resync, Log: log,
	}, client, &nodeagent.NetlinkRoutes{Protocol: netlink.RouteProtocol(*proto)})
	if err != nil {
		log.Error("configure", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("run", "err", err)
		return 1
	}
	return 0
}
