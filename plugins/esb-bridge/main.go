// Command esb-bridge is the esbnet bridge CNI plugin. The logic lives in
// package bridge; this main only wires it to skel.
package main

import (
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/edge-serverless-box/esbnet/internal/buildinfo"
	"github.com/edge-serverless-box/esbnet/plugins/esb-bridge/bridge"
)

// Namespace and netlink work must stay on one OS thread.
func init() { runtime.LockOSThread() }

func main() {
	if buildinfo.PrintPluginVersion(os.Args, os.Getenv, os.Stdout, "esb-bridge") {
		return
	}
	p := &bridge.Plugin{}
	skel.PluginMainFuncs(p.Funcs(), buildinfo.PluginInfo("esb-bridge", version.All), buildinfo.About("esb-bridge"))
}
