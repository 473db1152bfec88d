package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The kernel check reads /sys/module, the module lists and the kernel
// config; a feature found in none of them fails, and with no source at all
// the check cannot tell and warns.
func TestKernel(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys")
	for _, m := range []string{"bridge", "nf_tables"} {
		if err := os.MkdirAll(filepath.Join(sys, "module", m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mods := filepath.Join(dir, "modules")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(mods, "modules.dep"), "kernel/drivers/net/veth.ko.zst:\nkernel/net/netfilter/nft_chain_nat.ko.xz: nf_nat.ko\n")
	write(filepath.Join(mods, "modules.builtin"), "kernel/net/netfilter/nf_nat.ko\nkernel/net/netfilter/nf_conntrack.ko\n")
	cfg := filepath.Join(dir, "config")
	write(cfg, "CONFIG_NF_TABLES_IPV4=y\nCONFIG_NF_TABLES_BRIDGE=m\n")
	run := func(o Options) Finding {
		d := &doctor{o: o.withDefaults()}
		d.kernel()
		return d.findings[0]
	}
	o := Options{SysRoot: sys, ModulesDir: mods, KernelConfig: []string{cfg}}
	if f := run(o); f.Status != OK {
		t.Errorf("all present: %+v", f)
	}
	write(cfg, "CONFIG_NF_TABLES_IPV4=y\n# CONFIG_NF_TABLES_BRIDGE is not set\n")
	if f := run(o); f.Status != Fail || !strings.Contains(f.Message, "CONFIG_NF_TABLES_BRIDGE") || f.Fix == "" {
		t.Errorf("bridge nftables missing: %+v", f)
	}
	empty := filepath.Join(dir, "none")
	if f := run(Options{SysRoot: sys, ModulesDir: empty, KernelConfig: []string{filepath.Join(empty, "config")}}); f.Status != Warn || !strings.Contains(f.Message, "veth") {
		t.Errorf("no sources: %+v", f)
	}
}

func TestWriteText(t *testing.T) {
	r := Report{Findings: []Finding{{Check: "kernel", Status: OK, Message: "fine"},
		{Check: "bridge", Status: Fail, Message: "down", Fix: "ip link set esb-cni0 up"},
		{Check: "sysctl", Status: Warn, Message: "ip_forward 0", Fix: "sysctl -w net.ipv4.ip_forward=1"}}}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	iFail, iWarn, iOK := strings.Index(out, "FAIL  bridge"), strings.Index(out, "WARN  sysctl"), strings.Index(out, "OK    kernel")
	if iFail < 0 || iWarn < iFail || iOK < iWarn || !strings.Contains(out, "fix: ip link set esb-cni0 up") ||
		!strings.Contains(out, "1 problem(s) block workers, 1 warning(s)") {
		t.Errorf("text report:\n%s", out)
	}
}
