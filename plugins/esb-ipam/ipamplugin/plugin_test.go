package ipamplugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
)

// These tests call the verbs in-process; tests/ns/ipamtest runs the binary
// through libcni as a runtime does.

func netconf(version, dir, extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"esbt","type":"esb-ipam","ipam":{"type":"esb-ipam","subnet":"10.0.0.0/29","dataDir":%q%s}}`, version, dir, extra))
}

func cniCode(t *testing.T, err error) uint {
	t.Helper()
	code, ok := conf.CNICode(err)
	if !ok {
		t.Fatalf("want a *types.Error, got %T %v", err, err)
	}
	return code
}

func TestPluginVerbs(t *testing.T) {
	for _, ver := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			dir := t.TempDir()
			var out bytes.Buffer
			p := &Plugin{Stdout: &out, BootID: "boot"}
			args := &skel.CmdArgs{ContainerID: "ctr", IfName: "eth0", StdinData: netconf(ver, dir, "")}
			if err := p.Add(args); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var res struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []struct {
					Version string `json:"version"`
					Address string `json:"address"`
					Gateway string `json:"gateway"`
				} `json:"ips"`
			}
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("result %q: %v", out.String(), err)
			}
			if res.CNIVersion != ver || len(res.IPs) != 1 || res.IPs[0].Address != "10.0.0.2/29" || res.IPs[0].Gateway != "10.0.0.1" {
				t.Fatalf("result %s", out.String())
			}
			if (ver == "0.4.0") != (res.IPs[0].Version == "4") {
				t.Errorf("ips[].version is %q for %s", res.IPs[0].Version, ver)
			}
			if err := p.Check(args); err != nil {
				t.Errorf("CHECK after ADD: %v", err)
			}
			if err := p.Status(args); err != nil {
				t.Errorf("STATUS: %v", err)
			}
			if err := p.Del(args); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if err := p.Del(args); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
			if code := cniCode(t, p.Check(args)); code != types.ErrUnknownContainer {
				t.Errorf("CHECK after DEL: code %d, want %d", code, types.ErrUnknownContainer)
			}
		})
	}
}

func TestPluginCheckComparesPrevResult(t *testing.T) {
	dir := t.TempDir()
	p := &Plugin{Stdout: &bytes.Buffer{}, BootID: "boot"}
	add := &skel.CmdArgs{ContainerID: "ctr", IfName: "eth0", StdinData: netconf("1.1.0", dir, "")}
	if err := p.Add(add); err != nil {
		t.Fatal(err)
	}
	withPrev := func(ip string) *skel.CmdArgs {
		b := strings.Replace(string(netconf("1.1.0", dir, "")), `"type":"esb-ipam","ipam"`,
			`"type":"esb-ipam","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"`+ip+`","gateway":"10.0.0.1"}]},"ipam"`, 1)
		return &skel.CmdArgs{ContainerID: "ctr", IfName: "eth0", StdinData: []byte(b)}
	}
	if err := p.Check(withPrev("10.0.0.2/29")); err != nil {
		t.Errorf("CHECK with matching prevResult: %v", err)
	}
	err := p.Check(withPrev("10.0.0.5/29"))
	if code := cniCode(t, err); code != conf.CodeDrift || !strings.Contains(err.Error(), "10.0.0.2") {
		t.Errorf("CHECK with other prevResult: %v (code %d)", err, code)
	}
}

func TestPluginErrorsCarryCNICodes(t *testing.T) {
	dir := t.TempDir()
	p := &Plugin{Stdout: &bytes.Buffer{}, BootID: "boot"}
	args := func(id, stdin string) *skel.CmdArgs {
		return &skel.CmdArgs{ContainerID: id, IfName: "eth0", StdinData: []byte(stdin)}
	}
	// Bad config names the field, code 7; bad JSON, code 6.
	err := p.Add(args("c", `{"cniVersion":"1.1.0","name":"esbt","ipam":{"type":"esb-ipam","subnet":"10.0.0.0/33"}}`))
	if cniCode(t, err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "ipam.subnet") {
		t.Errorf("bad subnet: %v", err)
	}
	if cniCode(t, p.Add(args("c", `{"cniVersion":`))) != types.ErrDecodingFailure {
		t.Error("malformed JSON is not code 6")
	}
	// Exhaustion: ADD is code 100, STATUS is code 50.
	for i := 0; i < 5; i++ {
		if err := p.Add(args(fmt.Sprint("c", i), string(netconf("1.1.0", dir, "")))); err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
	}
	err = p.Add(args("c9", string(netconf("1.1.0", dir, ""))))
	if cniCode(t, err) != conf.CodeExhausted {
		t.Errorf("exhausted ADD: %v", err)
	}
	err = p.Status(args("", string(netconf("1.1.0", dir, ""))))
	if cniCode(t, err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "5 of 5 in use") {
		t.Errorf("exhausted STATUS: %v", err)
	}
	// GC with a valid list frees the others (no grace).
	gc := strings.Replace(string(netconf("1.1.0", dir, `,"gcGrace":"0s"`)), `"type":"esb-ipam","ipam"`,
		`"type":"esb-ipam","cni.dev/valid-attachments":[{"containerID":"c0","ifname":"eth0"}],"ipam"`, 1)
	if err := p.GC(args("", gc)); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if err := p.Status(args("", string(netconf("1.1.0", dir, "")))); err != nil {
		t.Errorf("STATUS after GC: %v", err)
	}
	if err := p.Check(args("c0", string(netconf("1.1.0", dir, "")))); err != nil {
		t.Errorf("valid attachment lost by GC: %v", err)
	}
	if cniCode(t, p.Check(args("c1", string(netconf("1.1.0", dir, ""))))) != types.ErrUnknownContainer {
		t.Error("stale attachment survived GC")
	}
	// A held lock makes ADD code 11.
	held, err := ipam.OpenBolt(dir, "esbt", ipam.BoltOptions{BootID: "boot"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Close() }()
	err = p.Add(args("c8", string(netconf("1.1.0", dir, `,"lockWait":"50ms"`))))
	if cniCode(t, err) != types.ErrTryAgainLater {
		t.Errorf("locked store: %v", err)
	}
}
