package doctor

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
)

// procSys writes a /proc/sys of the given values under a temp dir.
func procSys(t *testing.T, values map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, v := range values {
		p := filepath.Join(dir, strings.ReplaceAll(name, ".", "/"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// one runs check on a doctor over o and returns its only finding, or
// fails when it made none or several.
func one(t *testing.T, o Options, check func(*doctor)) Finding {
	t.Helper()
	if o.SysctlFile == "" { // never the machine's (make install may have written it)
		o.SysctlFile = filepath.Join(t.TempDir(), SysctlFile)
	}
	d := &doctor{o: o.withDefaults()}
	check(d)
	if len(d.findings) != 1 {
		t.Fatalf("want one finding, got %+v", d.findings)
	}
	return d.findings[0]
}

// wantFinding fails unless f has status s, its message names every one of
// msg and its fix every one of fix.
func wantFinding(t *testing.T, what string, f Finding, s Status, msg, fix []string) {
	t.Helper()
	if f.Status != s {
		t.Errorf("%s: %s, want %s: %s", what, f.Status, s, f.Message)
	}
	for _, m := range msg {
		if !strings.Contains(f.Message, m) {
			t.Errorf("%s: message does not name %q: %s", what, m, f.Message)
		}
	}
	for _, x := range fix {
		if !strings.Contains(f.Fix, x) {
			t.Errorf("%s: fix does not say %q: %s", what, x, f.Fix)
		}
	}
	if s != OK && f.Fix == "" {
		t.Errorf("%s: %s without a fix", what, s)
	}
}

func neighValues(fam string, t1, t2, t3 string) map[string]string {
	p := "net." + fam + ".neigh.default.gc_thresh"
	return map[string]string{p + "1": t1, p + "2": t2, p + "3": t3}
}

func TestNeigh(t *testing.T) {
	v4 := netState{}
	dual := netState{ipam: &conf.IPAM{V6: &conf.Range{}}}
	defaults := neighValues("ipv4", "128", "512", "1024")
	f := one(t, Options{ProcSys: procSys(t, defaults)}, func(d *doctor) { d.neigh(v4) })
	wantFinding(t, "kernel defaults", f, Warn,
		[]string{"gc_thresh1/2/3 are 128/512/1024", "1000 workers", "about 2000", "neighbour table overflow"},
		[]string{"sysctl -w net.ipv4.neigh.default.gc_thresh1=4096 net.ipv4.neigh.default.gc_thresh2=8192 net.ipv4.neigh.default.gc_thresh3=16384",
			"net.ipv4.neigh.default.gc_thresh3 = 16384", SysctlFile})

	// A value above the recommendation is never lowered by the fix.
	f = one(t, Options{ProcSys: procSys(t, neighValues("ipv4", "8192", "512", "1024"))}, func(d *doctor) { d.neigh(v4) })
	wantFinding(t, "thresh1 already high", f, Warn, nil, []string{"gc_thresh1=8192 ", "gc_thresh3=16384"})

	f = one(t, Options{ProcSys: procSys(t, neighValues("ipv4", "4096", "8192", "16384"))}, func(d *doctor) { d.neigh(v4) })
	wantFinding(t, "raised", f, OK, []string{"gc_thresh3 is 16384", "2000"}, nil)

	// Dual stack: the IPv6 table is read too.
	both := neighValues("ipv4", "4096", "8192", "16384")
	for k, v := range neighValues("ipv6", "128", "512", "1024") {
		both[k] = v
	}
	f = one(t, Options{ProcSys: procSys(t, both)}, func(d *doctor) { d.neigh(dual) })
	wantFinding(t, "IPv6 at its defaults", f, Warn, []string{"net.ipv6.neigh.default.gc_thresh1/2/3 are 128/512/1024"},
		[]string{"net.ipv6.neigh.default.gc_thresh3=16384"})
	if strings.Contains(f.Fix, "ipv4") {
		t.Errorf("the fix changes the IPv4 table, which is already high enough: %s", f.Fix)
	}

	// 5,000 workers need 10,000 entries.
	f = one(t, Options{ProcSys: procSys(t, neighValues("ipv4", "4096", "8192", "8192")), Workers: 5000}, func(d *doctor) { d.neigh(v4) })
	wantFinding(t, "5000 workers", f, Warn, []string{"about 10000"}, []string{"gc_thresh1=32768 ", "gc_thresh3=131072"})

	f = one(t, Options{ProcSys: t.TempDir()}, func(d *doctor) { d.neigh(v4) })
	wantFinding(t, "unreadable", f, Warn, []string{"cannot read net.ipv4.neigh.default.gc_thresh1"}, []string{"at least 2000"})
}

func TestPids(t *testing.T) {
	f := one(t, Options{ProcSys: procSys(t, map[string]string{"kernel.pid_max": "32768", "kernel.threads-max": "192734"})}, (*doctor).pids)
	wantFinding(t, "1000 workers", f, OK, []string{"kernel.pid_max is 32768", "28096 tasks"}, nil)

	f = one(t, Options{Workers: 2000, ProcSys: procSys(t, map[string]string{"kernel.pid_max": "32768", "kernel.threads-max": "30000"})}, (*doctor).pids)
	wantFinding(t, "2000 workers", f, Warn, []string{"kernel.pid_max is 32768, kernel.threads-max is 30000", "about 52096 tasks"},
		[]string{"sysctl -w kernel.pid_max=4194304 kernel.threads-max=131072", "kernel.pid_max = 4194304", SysctlFile})
}

func TestInotify(t *testing.T) {
	const name = "fs.inotify.max_user_instances"
	f := one(t, Options{ProcSys: procSys(t, map[string]string{name: "128"})}, (*doctor).inotify)
	wantFinding(t, "default", f, Warn, []string{name + " is 128", "too many open files"},
		[]string{"sysctl -w fs.inotify.max_user_instances=8192 && printf 'fs.inotify.max_user_instances = 8192\\n' >> ", SysctlFile})
	f = one(t, Options{ProcSys: procSys(t, map[string]string{name: "8192"})}, (*doctor).inotify)
	wantFinding(t, "raised", f, OK, []string{name + " is 8192"}, nil)
	f = one(t, Options{Workers: 10000, ProcSys: procSys(t, map[string]string{name: "8192"})}, (*doctor).inotify)
	wantFinding(t, "10000 workers", f, Warn, nil, []string{name + "=32768"})
}

func TestFiles(t *testing.T) {
	proc := t.TempDir()
	limits := func(soft string) string {
		return "Limit                     Soft Limit           Hard Limit           Units     \n" +
			"Max cpu time              unlimited            unlimited            seconds   \n" +
			"Max open files            " + soft + "                524288               files     \n"
	}
	for pid, p := range map[string][2]string{
		"100": {"containerd", limits("unlimited")},
		"200": {"esb-agent", limits("1024")},
		"300": {"containerd-shim", limits("1024")}, // not a daemon of interest
		"400": {"dockerd", limits("1048576")},
	} {
		dir := filepath.Join(proc, pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for file, body := range map[string]string{"comm": p[0] + "\n", "limits": p[1]} {
			if err := os.WriteFile(filepath.Join(dir, file), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	sys := procSys(t, map[string]string{"fs.file-max": "9223372036854775807"})
	f := one(t, Options{ProcSys: sys, ProcRoot: proc}, (*doctor).files)
	wantFinding(t, "agent at 1024", f, Warn, []string{"esb-agent (pid 200) may open 1024 files", "~17024"},
		[]string{"systemctl edit esb-agent: [Service] LimitNOFILE=1048576, then systemctl restart esb-agent"})
	if strings.Contains(f.Message, "containerd-shim") || strings.Contains(f.Message, "dockerd") {
		t.Errorf("names a process within its limit: %s", f.Message)
	}

	f = one(t, Options{ProcSys: procSys(t, map[string]string{"fs.file-max": "50000"}), ProcRoot: t.TempDir()}, (*doctor).files)
	wantFinding(t, "low file-max, no daemons", f, Warn, []string{"fs.file-max is 50000", "~64000"},
		[]string{"sysctl -w fs.file-max=131072"})

	f = one(t, Options{ProcSys: sys, ProcRoot: t.TempDir()}, (*doctor).files)
	wantFinding(t, "nothing running", f, OK, []string{"no esb-agent, containerd or dockerd running"}, nil)
}

func TestConntrack(t *testing.T) {
	d := &doctor{o: Options{ProcSys: t.TempDir()}.withDefaults()}
	d.conntrack()
	if len(d.findings) != 0 {
		t.Errorf("conntrack not loaded: %+v", d.findings)
	}
	const name = "net.netfilter.nf_conntrack_max"
	f := one(t, Options{ProcSys: procSys(t, map[string]string{name: "262144", "net.netfilter.nf_conntrack_count": "12"})}, (*doctor).conntrack)
	wantFinding(t, "default", f, OK, []string{name + " is 262144"}, nil)
	f = one(t, Options{ProcSys: procSys(t, map[string]string{name: "16384"})}, (*doctor).conntrack)
	wantFinding(t, "small", f, Warn, []string{name + " is 16384", "~64000", "table full"},
		[]string{"sysctl -w net.netfilter.nf_conntrack_max=262144", SysctlFile})
	f = one(t, Options{ProcSys: procSys(t, map[string]string{name: "262144", "net.netfilter.nf_conntrack_count": "250000"})}, (*doctor).conntrack)
	wantFinding(t, "nearly full", f, Warn, []string{"250000 of " + name + " 262144"}, []string{name + "="})
}

func TestPortsVerdict(t *testing.T) {
	f := one(t, Options{}, func(d *doctor) { d.portsVerdict("esb-cni0", 3) })
	wantFinding(t, "default", f, OK, []string{"3 of 1023 ports", "max-workers 1000 fits"}, nil)
	f = one(t, Options{Workers: 2000}, func(d *doctor) { d.portsVerdict("esb-cni0", 3) })
	wantFinding(t, "max-workers 2000", f, Warn, []string{"max-workers 2000 is above the 1023 ports", "error 103"}, []string{"max-workers: 1023"})
	f = one(t, Options{}, func(d *doctor) { d.portsVerdict("esb-cni0", 950) })
	wantFinding(t, "950 ports", f, Warn, []string{"950 of the 1023 ports"}, []string{"release idle workers"})
}

// TestInstalledSysctlFits: the sysctl file make install writes
// (deploy/sysctl) holds what neigh and inotify ask for esb-agent's default
// max-workers, so an installed node fits its workers after a boot.
func TestInstalledSysctlFits(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "sysctl", filepath.Base(SysctlFile)))
	if err != nil {
		t.Fatalf("the installed sysctl file is named after SysctlFile: %v", err)
	}
	settings, err := sysctlSettings(b)
	if err != nil {
		t.Fatalf("not a setting: %v", err)
	}
	values := map[string]string{}
	for name, v := range settings {
		values[name] = strconv.FormatInt(v, 10)
	}
	if len(values) != 4 {
		t.Errorf("settings: %v, want the three neighbour thresholds and inotify instances", values)
	}
	o := Options{ProcSys: procSys(t, values)}
	wantFinding(t, "neigh", one(t, o, func(d *doctor) { d.neigh(netState{}) }), OK, []string{"1000 workers"}, nil)
	wantFinding(t, "inotify", one(t, o, (*doctor).inotify), OK, nil, nil)
}

// TestSysctlFixAppliesInstalledFile: where the sysctl file already holds
// the values a check asks for (make install wrote it, no boot since), the
// fix applies the file; where it holds less, or lacks one, the fix sets
// the values and appends them.
func TestSysctlFixAppliesInstalledFile(t *testing.T) {
	const name = "fs.inotify.max_user_instances"
	file := filepath.Join(t.TempDir(), "10-esbnet.conf")
	o := Options{ProcSys: procSys(t, map[string]string{name: "128"}), SysctlFile: file}
	for _, tc := range []struct{ content, fix string }{
		{"# esbnet\n" + name + " = 8192\n", "sysctl -p " + file},
		{name + " = 8192\n" + name + " = 16384\n", "sysctl -p " + file},
		{name + " = 4096\n", "sysctl -w " + name + "=8192 && printf '" + name + " = 8192\\n' >> " + file},
		{name + " = 8192\n" + name + " = 512\n", "sysctl -w " + name + "=8192"},
		{"net.ipv4.neigh.default.gc_thresh3 = 16384\n", "sysctl -w " + name + "=8192"},
	} {
		if err := os.WriteFile(file, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		wantFinding(t, tc.content, one(t, o, (*doctor).inotify), Warn, nil, []string{tc.fix})
	}
}
