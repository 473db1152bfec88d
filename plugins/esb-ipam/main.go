// Command esb-ipam is the esbnet IPAM CNI plugin. The verbs live in
// package ipamplugin, the allocator in package ipam; this main only wires
// them to skel.
package main

import (
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/edge-serverless-box/esbnet/internal/buildinfo"
	"github.com/edge-serverless-box/esbnet/plugins/esb-ipam/ipamplugin"
)

func init() { runtime.LockOSThread() }

func main() {
	if buildinfo.PrintPluginVersion(os.Args, os.Getenv, os.Stdout, "esb-ipam") {
		return
	}
	p := &ipamplugin.Plugin{}
	skel.PluginMainFuncs(p.Funcs(), buildinfo.PluginInfo("esb-ipam", version.All), buildinfo.About("esb-ipam"))
}
