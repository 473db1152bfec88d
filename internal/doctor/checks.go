package doctor

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/conf/confdir"
	"github.com/edge-serverless-box/esbnet/conf/natfile"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/nat"
)

// netState is what the conflist says about the network, with esbnet's
// defaults where it could not be read.
type netState struct {
	path      string
	bridge    string
	antiSpoof bool
	gateway   netip.Prefix // gateway address with the subnet's length
	ipam      *conf.IPAM   // nil unless the bridge uses esb-ipam
}

type natState struct {
	rules *conf.NATRules // nil: no rule file, or it did not load
}

// kernelFeatures are what esbnet needs of the kernel: each is met by one
// of its modules being loaded, built in or loadable, or by its config
// symbol being y or m.
var kernelFeatures = []struct {
	what    string
	modules []string
	config  string
}{
	{"bridge", []string{"bridge"}, "CONFIG_BRIDGE"},
	{"veth", []string{"veth"}, "CONFIG_VETH"},
	{"nftables", []string{"nf_tables"}, "CONFIG_NF_TABLES"},
	{"nftables for IPv4", nil, "CONFIG_NF_TABLES_IPV4"},
	{"nftables for bridges (anti-spoofing)", nil, "CONFIG_NF_TABLES_BRIDGE"},
	{"nftables NAT", []string{"nft_chain_nat", "nft_chain_nat_ipv4"}, "CONFIG_NFT_NAT"},
	{"NAT", []string{"nf_nat"}, "CONFIG_NF_NAT"},
	{"conntrack", []string{"nf_conntrack"}, "CONFIG_NF_CONNTRACK"},
}

func (d *doctor) kernel() {
	release := ""
	if b, err := os.ReadFile(filepath.Join(d.o.ProcSys, "kernel/osrelease")); err == nil {
		release = strings.TrimSpace(string(b))
	}
	modDir := d.o.ModulesDir
	if modDir == "" && release != "" {
		modDir = filepath.Join("/lib/modules", release)
	}
	known := map[string]string{} // module name -> "built in" or "loadable"
	for _, f := range []struct{ file, how string }{{"modules.dep", "loadable"}, {"modules.builtin", "built in"}} {
		b, err := os.ReadFile(filepath.Join(modDir, f.file))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			path, _, _ := strings.Cut(line, ":")
			name := filepath.Base(path)
			if i := strings.Index(name, ".ko"); i > 0 {
				known[strings.ReplaceAll(name[:i], "-", "_")] = f.how
			}
		}
	}
	configs := d.o.KernelConfig
	if len(configs) == 0 {
		configs = []string{"/proc/config.gz", "/boot/config-" + release}
	}
	kconf, kconfPath := readKernelConfig(configs)
	var missing, unknown, have []string
	for _, f := range kernelFeatures {
		found := ""
		for _, m := range f.modules {
			if _, err := os.Stat(filepath.Join(d.o.SysRoot, "module", m)); err == nil {
				found = m + " loaded"
			} else if how := known[m]; how != "" {
				found = m + " " + how
			}
			if found != "" {
				break
			}
		}
		if v := kconf[f.config]; found == "" && (v == "y" || v == "m") {
			found = f.config + "=" + v
		}
		switch {
		case found != "":
			have = append(have, f.what)
		case kconf != nil || len(known) > 0:
			missing = append(missing, fmt.Sprintf("%s (%s)", f.what, f.config))
		default:
			unknown = append(unknown, f.what)
		}
	}
	where := fmt.Sprintf("looked in %s/module, %s and %s", d.o.SysRoot, modDir, strings.Join(configs, ", "))
	switch {
	case len(missing) > 0:
		d.add("kernel", Fail, "install the kernel's modules (apt-get install linux-image-$(uname -r)) or use a kernel built with "+
			"CONFIG_BRIDGE, CONFIG_VETH, CONFIG_NF_TABLES(_IPV4, _BRIDGE), CONFIG_NFT_NAT, CONFIG_NF_NAT and CONFIG_NF_CONNTRACK",
			"the kernel lacks %s (%s)", strings.Join(missing, ", "), where)
	case len(unknown) > 0:
		d.add("kernel", Warn, "modprobe bridge veth nf_tables nft_chain_nat (an error names what is missing)",
			"cannot tell whether the kernel has %s: no module list and no kernel config (%s)", strings.Join(unknown, ", "), where)
	default:
		src := "module lists"
		if kconfPath != "" {
			src = kconfPath
		}
		d.add("kernel", OK, "", "kernel has %s (from /sys/module and %s)", strings.Join(have, ", "), src)
	}
}

// readKernelConfig reads the first kernel config of paths that exists
// (gzip-compressed when it ends in .gz), or returns nil.
func readKernelConfig(paths []string) (map[string]string, string) {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		var r io.Reader = f
		if strings.HasSuffix(p, ".gz") {
			zr, err := gzip.NewReader(f)
			if err != nil {
				_ = f.Close()
				continue
			}
			r = zr
		}
		m := map[string]string{}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
				m[k] = v
			}
		}
		err = sc.Err()
		_ = f.Close()
		if err == nil {
			return m, p
		}
	}
	return nil, ""
}

func (d *doctor) conflist() netState {
	gw := netip.MustParsePrefix(conf.DefaultGateway + "/16")
	st := netState{bridge: conf.BridgeFor(d.o.Network), antiSpoof: true, gateway: gw}
	files, err := libcni.ConfFiles(d.o.ConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		d.add("conflist", Fail, fmt.Sprintf("esbctl conflist -o %s", filepath.Join(d.o.ConfDir, filepath.Base(conf.ConflistPath))),
			"cannot read the CNI configuration directory %s: %v", d.o.ConfDir, err)
		return st
	}
	var list *libcni.NetworkConfigList
	var parseErrs []string
	for _, f := range files {
		l, err := libcni.ConfListFromFile(f)
		if err != nil {
			if strings.HasSuffix(f, ".conflist") {
				parseErrs = append(parseErrs, fmt.Sprintf("%s: %v", f, err))
			}
			continue
		}
		if l.Name == d.o.Network {
			list, st.path = l, f
			break
		}
	}
	fixWrite := fmt.Sprintf("esbctl conflist -o %s -force", filepath.Join(d.o.ConfDir, filepath.Base(conf.ConflistPath)))
	if list == nil {
		msg := fmt.Sprintf("no configuration in %s defines network %q", d.o.ConfDir, d.o.Network)
		if len(parseErrs) > 0 {
			msg += "; unreadable: " + strings.Join(parseErrs, "; ")
		}
		d.add("conflist", Fail, fixWrite, "%s", msg)
		return st
	}
	var bridgeConf *conf.BridgeNetConf
	for _, p := range list.Plugins {
		if p.Network.Type != conf.BridgeType {
			continue
		}
		// The plugin gets name and cniVersion from the list, as libcni
		// passes them.
		pc, err := libcni.InjectConf(p, map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
		if err != nil {
			d.add("conflist", Fail, fixWrite, "%s: %v", st.path, err)
			return st
		}
		nc, err := conf.ParseBridgeNetConf(pc.Bytes)
		if err != nil {
			d.add("conflist", Fail, fixWrite, "%s: %v", st.path, err)
			return st
		}
		bridgeConf = nc
	}
	if bridgeConf == nil {
		d.add("conflist", Fail, fixWrite, "%s defines network %q without an %s plugin", st.path, d.o.Network, conf.BridgeType)
		return st
	}
	st.bridge, st.antiSpoof, st.ipam = bridgeConf.Bridge, bridgeConf.AntiSpoof, bridgeConf.IPAM
	if st.ipam != nil {
		st.gateway = netip.PrefixFrom(st.ipam.V4.Gateway, st.ipam.V4.Subnet.Bits())
	}
	d.add("conflist", OK, "", "%s defines network %q (bridge %s, cniVersion %s)", st.path, list.Name, st.bridge, list.CNIVersion)
	if nets, err := confdir.Networks(d.o.ConfDir); err == nil {
		if _, err := confdir.Others(d.o.Network, nets); err != nil {
			d.add("stacks", Fail, "give each stack's conflist its own bridge and subnet", "%v", err)
		}
	}
	d.plugins(list)
	return st
}

// plugins checks that every plugin of the list is installed and that
// esbnet's own are of this build.
func (d *doctor) plugins(list *libcni.NetworkConfigList) {
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
		if p.Network.IPAM.Type != "" && p.Network.Type != conf.BridgeType {
			types = append(types, p.Network.IPAM.Type)
		}
	}
	if slices.Contains(types, conf.BridgeType) && !slices.Contains(types, conf.IPAMType) {
		types = append(types, conf.IPAMType) // installed beside esb-bridge, as make install does
	}
	var problems []string
	status := OK
	var found []string
	for _, t := range types {
		path := ""
		for _, dir := range d.o.BinDirs {
			p := filepath.Join(dir, t)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
				path = p
				break
			}
		}
		if path == "" {
			problems = append(problems, fmt.Sprintf("plugin %s is not in %s", t, strings.Join(d.o.BinDirs, ":")))
			status = Fail
			continue
		}
		if t != conf.BridgeType && t != conf.IPAMType {
			found = append(found, path)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), d.o.Timeout)
		out, err := exec.CommandContext(ctx, path, "--version").Output()
		cancel()
		v := strings.TrimSpace(string(out))
		switch {
		case err != nil || !strings.HasPrefix(v, t+" "):
			problems = append(problems, fmt.Sprintf("%s does not tell its version (%q, %v): an old build", path, v, err))
			status = worse(status, Warn)
		case d.o.Version != "" && !strings.HasPrefix(v, t+" "+d.o.Version+" "):
			problems = append(problems, fmt.Sprintf("%s is %q, esbctl is %s", path, v, d.o.Version))
			status = worse(status, Warn)
		default:
			found = append(found, v)
		}
	}
	if status == OK {
		d.add("plugins", OK, "", "installed: %s", strings.Join(found, ", "))
		return
	}
	d.add("plugins", status, "make install (from the esbnet source of the version you run), or install -m 0755 bin/esb-bridge bin/esb-ipam "+d.o.BinDirs[0]+"/",
		"%s", strings.Join(problems, "; "))
}

// worse orders statuses OK < Warn < Fail.
func worse(a, b Status) Status {
	rank := map[Status]int{OK: 0, Warn: 1, Fail: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func (d *doctor) loadNAT() {
	if d.o.NATRules == "" {
		return
	}
	r, err := natfile.Load(d.o.NATRules)
	if err != nil {
		d.add("nftables", Fail, "fix the rule file (esbctl nat apply -f "+d.o.NATRules+" names the bad field)", "NAT rules %s: %v", d.o.NATRules, err)
		return
	}
	if d.o.DNSPort != 0 {
		withDNS, err := r.WithResolver(netip.AddrPortFrom(r.Gateway, uint16(d.o.DNSPort)))
		if err != nil {
			d.add("nftables", Fail, "remove the port 53 forward from "+d.o.NATRules+": esb-agent adds it for its resolver", "NAT rules %s: %v", d.o.NATRules, err)
			return
		}
		r = withDNS
	}
	// The agent keeps the other stacks' subnets out (conf.NATRules.Others),
	// from the same directory; a conflict between them is the conflist
	// check's.
	if nets, err := confdir.Networks(d.o.ConfDir); err == nil {
		r.Others, _ = confdir.Others(d.o.Network, nets)
	}
	d.nat.rules = r
}

// table is the name of the network's nftables tables.
func (d *doctor) table() string { return conf.TableFor(d.o.Network) }

func (d *doctor) readSysctl(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(d.o.ProcSys, strings.ReplaceAll(name, ".", "/")))
	return strings.TrimSpace(string(b)), err
}

func (d *doctor) sysctls(st netState) {
	d.loadNAT()
	var bad []string
	status := OK
	var fixes []string
	fwd, err := d.readSysctl("net.ipv4.ip_forward")
	if err != nil || fwd != "1" {
		// esb-bridge turns it on at every ADD; off means something turned
		// it off since. Forwards to addresses off the node need it now.
		s := Warn
		if d.nat.rules != nil && slices.ContainsFunc(d.nat.rules.Forwards, func(f conf.Forward) bool { return !isLocal(f.To.Addr()) }) {
			s = Fail
		}
		status = worse(status, s)
		bad = append(bad, fmt.Sprintf("net.ipv4.ip_forward is %q (esb-bridge sets it at each ADD; until then workers' traffic to forwards off the node, and with egress open beyond it, is dropped)", fwd))
		fixes = append(fixes, "sysctl -w net.ipv4.ip_forward=1")
	}
	if d.nat.rules != nil && d.nat.rules.Loopback() {
		// The NAT manager sets it; without it DNAT to 127.0.0.1 is
		// dropped as martian.
		name := "net.ipv4.conf." + st.bridge + ".route_localnet"
		v, err := d.readSysctl(name)
		switch {
		case errors.Is(err, os.ErrNotExist):
			// no bridge yet: the NAT manager sets it when the bridge appears
		case err != nil || v != "1":
			status = Fail
			bad = append(bad, fmt.Sprintf("%s is %q but a forward targets 127.0.0.0/8 (workers' calls to the proxy are dropped)", name, v))
			fixes = append(fixes, "esbctl nat apply -f "+d.o.NATRules+" (or sysctl -w "+name+"=1)")
		}
	}
	if status == OK {
		d.add("sysctl", OK, "", "net.ipv4.ip_forward=1%s", map[bool]string{true: ", route_localnet on " + st.bridge, false: ""}[d.nat.rules != nil && d.nat.rules.Loopback()])
		return
	}
	d.add("sysctl", status, strings.Join(fixes, "; "), "%s", strings.Join(bad, "; "))
}

// isLocal reports whether a is an address of this namespace (traffic DNAT-ed
// to it is delivered here, not forwarded).
func isLocal(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(addrs, func(x netlink.Addr) bool {
		ip, _ := netip.AddrFromSlice(x.IP)
		return ip.Unmap() == a
	})
}

func (d *doctor) bridge(st netState) {
	link, err := netlinksafe.LinkByName(st.bridge)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		d.add("bridge", OK, "", "bridge %s does not exist yet: esb-bridge creates it with %s at the first ADD", st.bridge, st.gateway)
		return
	}
	if err != nil {
		d.add("bridge", Fail, "", "look up %s: %v", st.bridge, err)
		return
	}
	if link.Type() != "bridge" {
		d.add("bridge", Fail, "ip link delete "+st.bridge+" (esb-bridge then makes the bridge at the next ADD)",
			"%s is a %s, not a bridge: esb-bridge cannot attach workers", st.bridge, link.Type())
		return
	}
	var problems, fixes []string
	if link.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, "is down")
		fixes = append(fixes, "ip link set "+st.bridge+" up")
	}
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		d.add("bridge", Fail, "", "list addresses of %s: %v", st.bridge, err)
		return
	}
	has := slices.ContainsFunc(addrs, func(a netlink.Addr) bool {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		return netip.PrefixFrom(ip.Unmap(), ones) == st.gateway
	})
	if !has {
		problems = append(problems, "lacks the gateway address "+st.gateway.String())
		fixes = append(fixes, "ip addr add "+st.gateway.String()+" dev "+st.bridge)
	}
	if len(problems) > 0 {
		d.add("bridge", Fail, strings.Join(fixes, "; "), "bridge %s %s: workers cannot reach the gateway", st.bridge, strings.Join(problems, " and "))
		return
	}
	d.add("bridge", OK, "", "bridge %s is up with gateway %s", st.bridge, st.gateway)
}

// subnet fails when another interface holds an address in, or a route to,
// the esb subnet (Podman's podman0/cni-podman0 default to 10.88.0.0/16, and
// containerd's example config makes cni0 on it).
func (d *doctor) subnet(st netState) {
	subnet := st.gateway.Masked()
	var owners []string
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		d.add("subnet", Fail, "", "list addresses: %v", err)
		return
	}
	names := map[int]string{}
	name := func(idx int) string {
		if n, ok := names[idx]; ok {
			return n
		}
		n := fmt.Sprintf("interface %d", idx)
		if l, err := netlink.LinkByIndex(idx); err == nil {
			n = l.Attrs().Name
		}
		names[idx] = n
		return n
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		p := netip.PrefixFrom(ip.Unmap(), ones)
		if p.Masked().Overlaps(subnet) && name(a.LinkIndex) != st.bridge {
			owners = append(owners, fmt.Sprintf("%s has %s", name(a.LinkIndex), p))
		}
	}
	routes, err := netlinksafe.RouteList(nil, netlink.FAMILY_V4)
	if err == nil {
		for _, r := range routes {
			if r.Dst == nil || r.LinkIndex == 0 {
				continue
			}
			ip, _ := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			p := netip.PrefixFrom(ip.Unmap(), ones)
			n := name(r.LinkIndex)
			if p.Bits() >= subnet.Bits() && subnet.Contains(p.Addr()) && n != st.bridge && !slices.ContainsFunc(owners, func(o string) bool { return strings.HasPrefix(o, n+" ") }) {
				owners = append(owners, fmt.Sprintf("a route to %s goes through %s", p, n))
			}
		}
	}
	if len(owners) > 0 {
		d.add("subnet", Fail, "remove the other network (Podman: podman network rm podman, or ip link delete podman0/cni-podman0; "+
			"containerd's example: rm /etc/cni/net.d/10-containerd-net.conflist; ip link delete cni0), or give the esb network another subnet in "+st.pathOr(),
			"%s is also used elsewhere: %s (esb-bridge refuses ADD, error 110)", subnet, strings.Join(owners, "; "))
		return
	}
	d.add("subnet", OK, "", "no other interface uses %s", subnet)
}

func (st netState) pathOr() string {
	if st.path != "" {
		return st.path
	}
	return conf.ConflistPath
}

func (d *doctor) nftables(ctx context.Context, st netState) {
	if d.nat.rules == nil {
		if d.o.NATRules == "" {
			d.add("nftables", Warn, "give esb-agent --nat-rules FILE (nat-rules: in /etc/esb/agent.yaml), or esbctl nat apply -f FILE",
				"no NAT rule file configured: workers reach nothing through the gateway %s", st.gateway.Addr())
		}
	} else {
		change, exists, err := nat.NewManagerFor(nil, d.table()).Diff(ctx, d.nat.rules)
		fix := "esbctl nat apply -f " + d.o.NATRules + " (esb-agent repairs it within its nat-interval while it runs)"
		switch {
		case err != nil:
			d.add("nftables", Fail, "", "read table ip %s: %v", d.table(), err)
		case !exists:
			d.add("nftables", Fail, fix, "table ip %s is missing: workers' calls to %s are not forwarded to the proxy", d.table(), st.gateway.Addr())
		case change != nat.Unchanged:
			d.add("nftables", Fail, fix, "table ip %s differs from %s (applying it would be %q)", d.table(), d.o.NATRules, change.String())
		default:
			d.add("nftables", OK, "", "table ip %s matches %s (%d forwards)", d.table(), d.o.NATRules, len(d.nat.rules.Forwards))
		}
	}
	d.antiSpoof(ctx, st)
}

// antiSpoof checks that every port of the bridge has its anti-spoof
// element in table bridge esb.
func (d *doctor) antiSpoof(ctx context.Context, st netState) {
	if !st.antiSpoof {
		return
	}
	br, err := netlinksafe.LinkByName(st.bridge)
	if err != nil {
		return // no bridge, no ports (the bridge check reports the rest)
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		d.add("antispoof", Fail, "", "list links: %v", err)
		return
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index && l.Type() == "veth" {
			ports = append(ports, l.Attrs().Name)
		}
	}
	guards, err := nat.NewManagerFor(nil, d.table()).ListGuards(ctx)
	if err != nil {
		d.add("antispoof", Fail, "", "read table bridge %s: %v", d.table(), err)
		return
	}
	var unguarded []string
	for _, p := range ports {
		if !slices.ContainsFunc(guards, func(g nat.Guard) bool { return g.Port == p && g.Active }) {
			unguarded = append(unguarded, p)
		}
	}
	if len(unguarded) > 0 {
		d.add("antispoof", Fail, "release the workers on those ports (esbctl ls; esbctl release -owner O ID): a new ADD installs the elements again",
			"%d of %d worker ports on %s have no anti-spoof element in table bridge %s (a worker there can forge its source): %s",
			len(unguarded), len(ports), st.bridge, d.table(), strings.Join(unguarded, ", "))
		return
	}
	d.add("antispoof", OK, "", "%d worker port(s), each with its anti-spoof element", len(ports))
}

func (d *doctor) ipam(st netState) {
	cfg := st.ipam
	if cfg == nil {
		return
	}
	if _, err := os.Stat(ipam.DBPath(cfg.DataDir, cfg.Network)); errors.Is(err, os.ErrNotExist) {
		d.add("ipam", OK, "", "no IPAM store yet (%s): nothing allocated", ipam.DBPath(cfg.DataDir, cfg.Network))
		return
	}
	c := *cfg
	c.LockWait = d.o.Timeout
	s, err := ipam.Open(&c, "")
	if err != nil {
		fix := ""
		if ipam.IsTryAgain(err) {
			fix = "find the process holding " + filepath.Join(cfg.DataDir, cfg.Network+".lock") + " (fuser -v it)"
		}
		d.add("ipam", Fail, fix, "open the IPAM store: %v", err)
		return
	}
	var allocs []*ipam.Allocation
	var used, capacity uint64
	err = s.View(func(tx ipam.Txn) error {
		var err error
		if used, capacity, err = ipam.Usage(tx, cfg.V4); err != nil {
			return err
		}
		return tx.ForEachAllocation(func(a *ipam.Allocation) error {
			allocs = append(allocs, a)
			return nil
		})
	})
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		d.add("ipam", Fail, "", "read the IPAM store: %v", err)
		return
	}
	// An allocation whose host veth is gone (after the grace ADD and GC
	// get) belongs to no live attachment: CNI GC releases it.
	var stale []string
	for _, a := range allocs {
		if time.Since(a.Created) < cfg.GCGrace {
			continue
		}
		if _, err := netlinksafe.LinkByName(conf.VethName(a.ID.ContainerID, a.ID.IfName)); err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				stale = append(stale, fmt.Sprintf("%s (%s)", a.ID, prefixes(a.IPs)))
			}
		}
	}
	usage := fmt.Sprintf("%d of %d addresses of %s in use", used, capacity, cfg.V4.String())
	status, msgs, fixes := OK, []string{usage}, []string{}
	switch {
	case capacity > 0 && used >= capacity:
		status = Fail
		msgs[0] = "the range is exhausted: " + usage
		fixes = append(fixes, "release workers, or widen ipam.rangeStart/rangeEnd/subnet in "+st.pathOr())
	case capacity > 0 && used*10 >= capacity*9:
		status = Warn
		msgs[0] = "the range is nearly full: " + usage
		fixes = append(fixes, "release idle workers (lower pool-min-idle), or widen the range in "+st.pathOr())
	}
	if len(stale) > 0 {
		status = worse(status, Warn)
		msgs = append(msgs, fmt.Sprintf("%d stale allocation(s) without a veth: %s", len(stale), strings.Join(stale, ", ")))
		fixes = append(fixes, "systemctl restart esb-agent (its start-up reconcile runs CNI GC with the live workers), or cnitool gc "+d.o.Network+" with the live attachments")
	} else {
		msgs = append(msgs, "none stale")
	}
	d.add("ipam", status, strings.Join(fixes, "; "), "%s", strings.Join(msgs, "; "))
}

func prefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Addr().String())
	}
	return strings.Join(s, ",")
}

func (d *doctor) runtime(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	switch d.o.Runtime {
	case "":
		return
	case "containerd":
		sock := strings.TrimPrefix(d.o.RuntimeURL, "unix://")
		err := containerdHealth(ctx, sock)
		if err != nil {
			d.add("runtime", Fail, "systemctl start containerd, or point esb-agent's containerd-address at its socket",
				"containerd at %s does not answer: %v", sock, err)
			return
		}
		d.add("runtime", OK, "", "containerd at %s is serving", sock)
	case "docker":
		sock, ok := strings.CutPrefix(d.o.RuntimeURL, "unix://")
		if !ok {
			d.add("runtime", Warn, "", "dockerd at %s: only unix:// addresses are checked", d.o.RuntimeURL)
			return
		}
		err := dockerPing(ctx, sock)
		if err != nil {
			d.add("runtime", Fail, "systemctl start docker, or point esb-agent's docker-host at its socket",
				"dockerd at %s does not answer: %v", sock, err)
			return
		}
		d.add("runtime", OK, "", "dockerd at %s answers /_ping", sock)
	default:
		d.add("runtime", Fail, "set runtime: containerd or docker", "unknown runtime %q", d.o.Runtime)
	}
}

// containerdHealth asks containerd's gRPC health service.
func containerdHealth(ctx context.Context, sock string) error {
	if _, err := os.Stat(sock); err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health %s", resp.Status)
	}
	return nil
}

func unixHTTP(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}}
}

func dockerPing(ctx context.Context, sock string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := unixHTTP(sock).Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/_ping: %s", resp.Status)
	}
	return nil
}

// registry checks the local registry's API root (/v2/ answers 200, or 401
// when it wants credentials).
func (d *doctor) registry(ctx context.Context) {
	if d.o.Registry == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	url := "http://" + d.o.Registry + "/v2/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err == nil {
		var resp *http.Response
		// Straight to the registry: an HTTP_PROXY of the operator's shell
		// is not the path the runtime takes to a local registry.
		client := &http.Client{Transport: &http.Transport{Proxy: nil}}
		if resp, err = client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
				err = fmt.Errorf("%s", resp.Status)
			}
		}
	}
	if err != nil {
		d.add("registry", Fail, "systemctl start docker-registry (the local registry), or fix plain-http-registries in /etc/esb/agent.yaml",
			"registry %s does not answer %s: %v (new workers cannot pull their images)", d.o.Registry, url, err)
		return
	}
	d.add("registry", OK, "", "registry %s answers", d.o.Registry)
}

// proxy connects to every TCP forward's target, from this namespace, as the
// DNAT-ed worker traffic would.
func (d *doctor) proxy(ctx context.Context) {
	if d.nat.rules == nil {
		return
	}
	var down, up []string
	for _, f := range d.nat.rules.Forwards {
		if f.Proto != "tcp" || (d.o.DNSPort != 0 && f.Port == conf.DNSPort) {
			continue // the resolver's forward: the dns check asks it
		}
		var dl net.Dialer
		cctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
		c, err := dl.DialContext(cctx, "tcp", f.To.String())
		cancel()
		if err != nil {
			down = append(down, fmt.Sprintf("%s:%d → %s: %v", d.nat.rules.Gateway, f.Port, f.To, err))
			continue
		}
		_ = c.Close()
		up = append(up, fmt.Sprintf("%d→%s", f.Port, f.To))
	}
	if len(down) > 0 {
		d.add("proxy", Fail, "start the local proxy (systemctl start haproxy) or fix the forward's target in "+d.o.NATRules,
			"proxy target(s) refuse connections: %s", strings.Join(down, "; "))
		return
	}
	if len(up) > 0 {
		d.add("proxy", OK, "", "proxy targets accept TCP: %s", strings.Join(up, ", "))
	}
}
