package ipamtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

const (
	refBridge  = "esb-cni0"
	refSubnet  = "10.88.0.0/16"
	refGateway = "10.88.0.1"
)

// TestReferenceBridge runs the reference bridge plugin (v1.10.0) with
// esb-ipam as its delegated IPAM, the way a runtime would: ADD in a "node"
// namespace that plays the host, for a "container" namespace. The
// container's eth0 gets the address esb-ipam stored, the bridge gets the
// gateway, the container reaches the gateway (and the node the container),
// CHECK passes, and DEL removes the veth and releases the address.
func TestReferenceBridge(t *testing.T) {
	bridgeBin := nstest.Tool(t, "bridge")
	node, ctr := nstest.NewNS(t), nstest.NewNS(t)
	dataDir := t.TempDir()
	cni := libcni.NewCNIConfigWithCacheDir(
		[]string{nstest.PluginDir(t), filepath.Dir(bridgeBin)}, t.TempDir(), nodetest.PluginExec())
	ipamObj := map[string]any{
		"type":    pluginTy,
		"subnet":  refSubnet,
		"gateway": refGateway,
		"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
		"dataDir": dataDir,
	}
	raw, err := json.Marshal(map[string]any{
		"cniVersion": "1.1.0",
		"name":       netName,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": refBridge, "isGateway": true, "ipam": ipamObj,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		t.Fatalf("parse conflist: %v", err)
	}
	ipamCfg, err := conf.ParseIPAMNetConf(mustJSON(t, map[string]any{"cniVersion": "1.1.0", "name": netName, "ipam": ipamObj}))
	if err != nil {
		t.Fatalf("parse ipam config: %v", err)
	}
	rt := &libcni.RuntimeConf{ContainerID: "ref-ctr", NetNS: ctr.Path(), IfName: ifName}
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()

	// libcni executes the plugin from the calling thread, which Do has
	// moved into the node namespace: the plugin runs there.
	var res types.Result
	err = node.Do(func(ns.NetNS) error {
		var err error
		res, err = cni.AddNetworkList(ctx, list, rt)
		return err
	})
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	deleted := false
	t.Cleanup(func() {
		if deleted {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout) // t.Context is done by now
		defer cancel()
		if err := node.Do(func(ns.NetNS) error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
			t.Errorf("cleanup DEL: %v", err)
		}
	})
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("convert result: %v", err)
	}
	if len(r.IPs) != 1 {
		t.Fatalf("result has %d IPs, want 1: %v", len(r.IPs), r)
	}
	ip, gw, err := ipConfigAddr(r.IPs[0].Address.IP, r.IPs[0].Address.Mask, r.IPs[0].Gateway)
	if err != nil {
		t.Fatal(err)
	}
	if gw.String() != refGateway || !netip.MustParsePrefix(refSubnet).Contains(ip.Addr()) || ip.Bits() != 16 {
		t.Fatalf("result gives %s via %s, want an address of %s via %s", ip, gw, refSubnet, refGateway)
	}
	st, err := readStore(dataDir, ipamCfg.IPAM)
	if err != nil {
		t.Fatalf("read store: %v", err)
	}
	if len(st.allocs) != 1 || st.allocs["ref-ctr"] != ip {
		t.Fatalf("store holds %v, want ref-ctr -> %s", st.allocs, ip)
	}

	ctrAddrs, err := nodetest.DoIn(ctr, func() ([]string, error) { return ifaceAddrs(ifName) })
	if err != nil {
		t.Fatalf("container: %v", err)
	}
	if !slices.Contains(ctrAddrs, ip.String()) {
		t.Fatalf("container's eth0 has %v, want %s", ctrAddrs, ip)
	}
	brAddrs, err := nodetest.DoIn(node, func() ([]string, error) { return ifaceAddrs(refBridge) })
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	if want := refGateway + "/16"; !slices.Contains(brAddrs, want) {
		t.Fatalf("bridge %s has %v, want %s", refBridge, brAddrs, want)
	}

	ping(t, ctr, refGateway)
	ping(t, node, ip.Addr().String())

	err = node.Do(func(ns.NetNS) error { return cni.CheckNetworkList(ctx, list, rt) })
	if err != nil {
		t.Fatalf("CHECK: %v", err)
	}

	err = node.Do(func(ns.NetNS) error { return cni.DelNetworkList(ctx, list, rt) })
	if err != nil {
		t.Fatalf("DEL: %v", err)
	}
	deleted = true
	if st, err := readStore(dataDir, ipamCfg.IPAM); err != nil || len(st.allocs) != 0 || st.used != 0 {
		t.Fatalf("after DEL the store holds %v (%d used), err %v", st.allocs, st.used, err)
	}
	err = ctr.Do(func(ns.NetNS) error {
		if _, err := net.InterfaceByName(ifName); err == nil {
			return fmt.Errorf("%s still exists", ifName)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("container after DEL: %v", err)
	}
}

// ifaceAddrs lists the addresses of an interface of the current namespace.
func ifaceAddrs(name string) ([]string, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", name, err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out, nil
}

// ping sends one echo request from namespace from to addr, which must be
// an address of a namespace the test made.
func ping(t *testing.T, from ns.NetNS, addr string) {
	t.Helper()
	name := filepath.Base(from.Path())
	out, err := exec.CommandContext(t.Context(), "ip", "netns", "exec", name, "ping", "-c", "1", "-W", "2", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", addr, name, err, out)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
