package nodeagent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/edge-serverless-box/esbnet/conf"
)

// NodeConflist renders the esb network of a Kubernetes node whose pod CIDR
// is podCIDR: esb-bridge on bridge with the first address of the CIDR as
// gateway, port isolation off (pods on one node reach each other, as
// Kubernetes expects; NetworkPolicy is not provided), anti-spoofing on,
// esb-ipam handing out the rest of the CIDR with a default route through
// the gateway. The result is validated with the plugins' own parser, so a
// CIDR the plugins would refuse fails here, naming the field.
func NodeConflist(podCIDR netip.Prefix, cniVersion, bridge, dataDir string) ([]byte, error) {
	if !podCIDR.IsValid() || !podCIDR.Addr().Is4() || podCIDR.Bits() > 30 {
		return nil, fmt.Errorf("spec.podCIDR %q: need an IPv4 CIDR of /30 or larger", podCIDR)
	}
	switch cniVersion {
	case "1.1.0", "1.0.0", "0.4.0":
	default:
		return nil, fmt.Errorf("cniVersion %q: must be 1.1.0, 1.0.0 or 0.4.0", cniVersion)
	}
	podCIDR = podCIDR.Masked()
	off := false
	ipam := conf.DefaultIPAMConfig()
	ipam.Subnet = podCIDR.String()
	ipam.Gateway = podCIDR.Addr().Next().String()
	if dataDir != "" {
		ipam.DataDir = dataDir
	}
	plugin := conf.BridgeConfig{
		Type:      conf.BridgeType,
		Bridge:    bridge,
		Isolation: &off,
		IPAM:      ipam,
	}
	cl := conf.DefaultConflist()
	cl.CNIVersion = cniVersion
	cl.Plugins = []any{plugin}
	out, err := cl.Marshal()
	if err != nil {
		return nil, fmt.Errorf("render conflist: %w", err)
	}
	one, err := pluginConf(cl, plugin)
	if err != nil {
		return nil, err
	}
	if _, err := conf.ParseBridgeNetConf(one); err != nil {
		return nil, fmt.Errorf("check conflist for %s: %w", podCIDR, err)
	}
	return out, nil
}

// pluginConf is the single-plugin configuration libcni hands esb-bridge
// for the list.
func pluginConf(cl conf.Conflist, plugin conf.BridgeConfig) ([]byte, error) {
	type withName struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		conf.BridgeConfig
	}
	one, err := json.Marshal(withName{cl.CNIVersion, cl.Name, plugin})
	if err != nil {
		return nil, fmt.Errorf("render plugin config: %w", err)
	}
	return one, nil
}

// WriteFileAtomic replaces path with data unless it already holds exactly
// data: a temporary file in the same directory, synced, then renamed over
// path, so a runtime reading the directory sees the old list or the new one,
// never a part. It reports whether the file changed.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	// The temporary name starts with a dot and does not end in .conflist,
	// so libcni never loads it.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return false, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return false, fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return false, fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	done = true
	return true, nil
}
