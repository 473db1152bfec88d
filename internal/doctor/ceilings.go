package doctor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/edge-serverless-box/esbnet/conf"
)

// The kernel's ceilings met on the way to many live workers on one node
// (issue #17) are compared with Options.Workers, the agent's max-workers,
// through these per-worker estimates. They are rough on purpose: each
// check says what it assumed, and a ceiling below the estimate is a
// warning (workers still run; the next ones will fail), never a failure.
const (
	// neighPerWorker: a worker's entry in the node's neighbour table (on
	// the bridge) and the gateway's in the worker's namespace. The IPv4
	// (and the IPv6) table is one per kernel, shared by every namespace.
	neighPerWorker = 2
	// tasksPerWorker: kernel tasks (threads) of one worker: its
	// containerd-shim-runc-v2 (11 threads measured), the worker process
	// (esb-worker: 8) and a margin for function runtimes with more.
	tasksPerWorker = 24
	// tasksBase: the rest of the node (daemons, the agent, containerd).
	tasksBase = 4096
	// inotifyMin: root's inotify instances; containerd, each worker's
	// shim (its cgroup's memory events) and runc take them.
	inotifyMin = 8192
	// filesPerWorker: descriptors esb-agent or the runtime daemon hold
	// for one worker (the shim's connection, log pipes, event streams,
	// connections to the worker), with a margin; filesBase for the rest.
	filesPerWorker = 16
	filesBase      = 1024
	// filesSystemPerWorker: descriptors of all the processes of one
	// worker (shim, worker, their share of the daemons), for fs.file-max.
	filesSystemPerWorker = 64
	// conntrackPerWorker: connections the node tracks per worker (invokes
	// and the worker's calls through the DNAT, each kept 120 s in
	// TIME_WAIT after it closes).
	conntrackPerWorker = 64
	// pidMaxLimit is the largest kernel.pid_max on 64-bit kernels
	// (PID_MAX_LIMIT), which systemd sets at boot since v243.
	pidMaxLimit = 4194304
	// nofileRecommended is esb-agent's unit's LimitNOFILE (fs.nr_open's
	// default, the largest a limit can be).
	nofileRecommended = 1048576
	// SysctlFile is where the fixes keep sysctl settings across reboots:
	// the file make install writes (deploy/sysctl), whose settings a line
	// appended later overrides. It sorts early, so an operator's own files
	// (and /etc/sysctl.conf) win over it.
	SysctlFile = "/etc/sysctl.d/10-esbnet.conf"
)

// ceilings checks each kernel ceiling against the workers the node is
// meant to hold: bridge ports, neighbour tables, tasks, inotify
// instances, open files and (when loaded) conntrack.
func (d *doctor) ceilings(st netState) {
	d.ports(st)
	d.neigh(st)
	d.pids()
	d.inotify()
	d.files()
	d.conntrack()
}

// workers names the target the checks compare with.
func (d *doctor) workers() string {
	return fmt.Sprintf("%d workers (max-workers)", d.o.Workers)
}

// setting is a sysctl and the value a fix gives it.
type setting struct {
	name  string
	value int64
}

// sysctlFix is the command that sets each setting now and keeps it in
// the sysctl file across reboots; where that file (make install's)
// already holds every setting at its value or above, the command that
// applies it now.
func (d *doctor) sysctlFix(set ...setting) string {
	if d.kept(set) {
		return fmt.Sprintf("sysctl -p %s (it holds these values, which boot applies)", d.o.SysctlFile)
	}
	var now, kept []string
	for _, s := range set {
		now = append(now, fmt.Sprintf("%s=%d", s.name, s.value))
		kept = append(kept, fmt.Sprintf("%s = %d", s.name, s.value))
	}
	return fmt.Sprintf("sysctl -w %s && printf '%s\\n' >> %s", strings.Join(now, " "), strings.Join(kept, `\n`), d.o.SysctlFile)
}

// kept reports whether the sysctl file sets every one of set to its value
// or above (the last line of a setting counts, as for sysctl -p).
func (d *doctor) kept(set []setting) bool {
	b, err := os.ReadFile(d.o.SysctlFile)
	if err != nil {
		return false
	}
	file, _ := sysctlSettings(b) // what parses counts, as for sysctl -p
	for _, s := range set {
		if v, ok := file[s.name]; !ok || v < s.value {
			return false
		}
	}
	return true
}

// sysctlSettings are the integer settings of a sysctl.d file, the last
// line of each winning; the error names the first line that is neither a
// comment (# or ;), blank nor "name = integer".
func sysctlSettings(b []byte) (map[string]int64, error) {
	file := map[string]int64{}
	var bad error
	for i, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		v, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if !ok || err != nil {
			if bad == nil {
				bad = fmt.Errorf("line %d: %q is not name = integer", i+1, line)
			}
			continue
		}
		file[strings.TrimSpace(name)] = v
	}
	return file, bad
}

func (d *doctor) sysctlInt(name string) (int64, error) {
	s, err := d.readSysctl(name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read %s: %q is not a number", name, s)
	}
	return v, nil
}

// unreadable reports a setting the check could not read.
func (d *doctor) unreadable(check, name string, err error, need int64) {
	d.add(check, Warn, fmt.Sprintf("read it on the host: sysctl %s (it should be at least %d)", name, need),
		"cannot read %s: %v", name, err)
}

// nextPow2 returns the least power of two not below n.
func nextPow2(n int64) int64 {
	p := int64(1)
	for p < n {
		p <<= 1
	}
	return p
}

// ports compares the bridge's ports, one per worker, with the 1,023 a
// Linux bridge holds: past them esb-bridge's ADD is error 103.
func (d *doctor) ports(st netState) {
	used := 0
	if br, err := netlinksafe.LinkByName(st.bridge); err == nil {
		if links, err := netlinksafe.LinkList(); err == nil {
			for _, l := range links {
				if l.Attrs().MasterIndex == br.Attrs().Index {
					used++
				}
			}
		}
	}
	d.portsVerdict(st.bridge, used)
}

func (d *doctor) portsVerdict(bridge string, used int) {
	limit := conf.BridgeMaxPorts
	switch {
	case d.o.Workers > limit:
		d.add("ports", Warn, fmt.Sprintf("set max-workers: %d (or less) in esb-agent's settings (/etc/esb/agent.yaml) and restart it", limit),
			"max-workers %d is above the %d ports a Linux bridge holds (one per worker): past %d workers ADD on %s fails with error 103 (ResourceExhausted)",
			d.o.Workers, limit, limit, bridge)
	case used*10 >= limit*9:
		d.add("ports", Warn, "release idle workers (lower pool-min-idle); the kernel's limit cannot be raised",
			"bridge %s has %d of the %d ports a Linux bridge holds: past them ADD fails with error 103 (ResourceExhausted)", bridge, used, limit)
	default:
		d.add("ports", OK, "", "bridge %s has %d of %d ports in use; max-workers %d fits", bridge, used, limit, d.o.Workers)
	}
}

// neigh compares the neighbour tables' hard limit (gc_thresh3) with two
// entries per worker. The tables are the kernel's, shared by every
// namespace: past gc_thresh3 no new neighbour is resolved ("neighbour
// table overflow") and workers become unreachable.
func (d *doctor) neigh(st netState) {
	need := int64(neighPerWorker * d.o.Workers)
	families := []string{"ipv4"}
	if st.ipam != nil && st.ipam.V6 != nil {
		families = append(families, "ipv6")
	}
	t1 := nextPow2(int64(4 * d.o.Workers))
	var low, fine []string
	var fix []setting
	for _, fam := range families {
		var vals [3]int64
		for i := range vals {
			name := fmt.Sprintf("net.%s.neigh.default.gc_thresh%d", fam, i+1)
			v, err := d.sysctlInt(name)
			if err != nil {
				d.unreadable("neigh", name, err, need)
				return
			}
			vals[i] = v
		}
		prefix := "net." + fam + ".neigh.default.gc_thresh"
		if vals[2] >= need {
			fine = append(fine, fmt.Sprintf("%s3 is %d", prefix, vals[2]))
			continue
		}
		low = append(low, fmt.Sprintf("%s1/2/3 are %d/%d/%d", prefix, vals[0], vals[1], vals[2]))
		for i, want := range []int64{t1, 2 * t1, 4 * t1} {
			fix = append(fix, setting{fmt.Sprintf("%s%d", prefix, i+1), max(want, vals[i])})
		}
	}
	if len(low) > 0 {
		d.add("neigh", Warn, d.sysctlFix(fix...),
			"%s: the kernel's neighbour table, shared by every namespace, holds at most gc_thresh3 entries and %s need about %d "+
				"(one on the bridge and one in the worker each); past it new workers are unreachable (\"neighbour table overflow\" in the kernel log)",
			strings.Join(low, "; "), d.workers(), need)
		return
	}
	d.add("neigh", OK, "", "%s: room for the ~%d neighbour entries of %s", strings.Join(fine, ", "), need, d.workers())
}

// pids compares kernel.pid_max and kernel.threads-max with the tasks the
// workers run: past either, fork and clone fail (EAGAIN) for the runtime,
// the shims and the workers.
func (d *doctor) pids() {
	need := int64(d.o.Workers*tasksPerWorker + tasksBase)
	var low, fine []string
	var fix []setting
	for _, c := range []struct {
		name string
		rec  int64
	}{
		{"kernel.pid_max", max(pidMaxLimit, nextPow2(need))},
		{"kernel.threads-max", nextPow2(2 * need)},
	} {
		v, err := d.sysctlInt(c.name)
		if err != nil {
			d.unreadable("pids", c.name, err, need)
			return
		}
		if v >= need {
			fine = append(fine, fmt.Sprintf("%s is %d", c.name, v))
			continue
		}
		low = append(low, fmt.Sprintf("%s is %d", c.name, v))
		fix = append(fix, setting{c.name, c.rec})
	}
	assumed := fmt.Sprintf("%s need about %d tasks (%d threads each: the shim, the worker process and a margin, plus %d for the rest of the node)",
		d.workers(), need, tasksPerWorker, tasksBase)
	if len(low) > 0 {
		d.add("pids", Warn, d.sysctlFix(fix...), "%s: %s; past it new workers fail to start (fork: resource temporarily unavailable)",
			strings.Join(low, ", "), assumed)
		return
	}
	d.add("pids", OK, "", "%s: %s", strings.Join(fine, ", "), assumed)
}

// inotify compares root's inotify instances with what containerd's shims
// and runc take: past the limit they fail with "too many open files".
func (d *doctor) inotify() {
	const name = "fs.inotify.max_user_instances"
	need := max(inotifyMin, nextPow2(int64(2*d.o.Workers)))
	v, err := d.sysctlInt(name)
	if err != nil {
		d.unreadable("inotify", name, err, need)
		return
	}
	if v < need {
		d.add("inotify", Warn, d.sysctlFix(setting{name, need}),
			"%s is %d: root has at most %d inotify instances, and containerd, each worker's shim (its cgroup's events) and runc take them; "+
				"for %s allow %d, or shims and runc fail with \"too many open files\"", name, v, v, d.workers(), need)
		return
	}
	d.add("inotify", OK, "", "%s is %d, at least the %d allowed for %s", name, v, need, d.workers())
}

// files compares fs.file-max with the descriptors of all the workers'
// processes, and the open-files limit of the running esb-agent,
// containerd and dockerd with what each holds per worker. Go raises its
// soft limit to the hard one at start, so the soft limit read from
// /proc/<pid>/limits is the one in force.
func (d *doctor) files() {
	var problems, fixes, fine []string
	const fileMax = "fs.file-max"
	needSys := int64(d.o.Workers * filesSystemPerWorker)
	v, err := d.sysctlInt(fileMax)
	switch {
	case err != nil:
		problems = append(problems, fmt.Sprintf("cannot read %s: %v", fileMax, err))
		fixes = append(fixes, "read it on the host: sysctl "+fileMax)
	case v < needSys:
		problems = append(problems, fmt.Sprintf("%s is %d, below the ~%d descriptors the processes of %s hold (%d each)", fileMax, v, needSys, d.workers(), filesSystemPerWorker))
		fixes = append(fixes, d.sysctlFix(setting{fileMax, nextPow2(2 * needSys)}))
	default:
		fine = append(fine, fmt.Sprintf("%s is %d", fileMax, v))
	}
	need := int64(d.o.Workers*filesPerWorker + filesBase)
	procs := d.daemons("esb-agent", "containerd", "dockerd")
	var short []string
	for _, p := range procs {
		if p.nofile < 0 {
			fine = append(fine, fmt.Sprintf("%s (pid %d) unlimited", p.comm, p.pid))
			continue
		}
		if p.nofile >= need {
			fine = append(fine, fmt.Sprintf("%s (pid %d) may open %d", p.comm, p.pid, p.nofile))
			continue
		}
		short = append(short, fmt.Sprintf("%s (pid %d) may open %d files", p.comm, p.pid, p.nofile))
		unit := map[string]string{"esb-agent": "esb-agent", "containerd": "containerd", "dockerd": "docker"}[p.comm]
		fix := fmt.Sprintf("systemctl edit %s: [Service] LimitNOFILE=%d, then systemctl restart %s", unit, nofileRecommended, unit)
		if !slices.Contains(fixes, fix) {
			fixes = append(fixes, fix)
		}
	}
	if len(short) > 0 {
		problems = append(problems, fmt.Sprintf("%s, below the ~%d each needs for %s at %d per worker; past it they fail with \"too many open files\"",
			strings.Join(short, ", "), need, d.workers(), filesPerWorker))
	}
	if len(procs) == 0 {
		fine = append(fine, "no esb-agent, containerd or dockerd running to read the limits of (the agent's unit sets LimitNOFILE="+strconv.Itoa(nofileRecommended)+")")
	}
	if len(problems) > 0 {
		d.add("files", Warn, strings.Join(fixes, "; "), "%s", strings.Join(problems, "; "))
		return
	}
	d.add("files", OK, "", "open files for %s: %s", d.workers(), strings.Join(fine, ", "))
}

// daemon is a running process of interest and its open-files limit (the
// soft one; -1 for unlimited).
type daemon struct {
	pid    int
	comm   string
	nofile int64
}

// daemons lists the running processes whose name is one of names, from
// ProcRoot, with their open-files limit; a process that went away or
// whose limits cannot be read is left out.
func (d *doctor) daemons(names ...string) []daemon {
	entries, err := os.ReadDir(d.o.ProcRoot)
	if err != nil {
		return nil
	}
	var out []daemon
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.o.ProcRoot, e.Name(), "comm"))
		comm := strings.TrimSpace(string(b))
		if err != nil || !slices.Contains(names, comm) {
			continue
		}
		n, err := openFilesLimit(filepath.Join(d.o.ProcRoot, e.Name(), "limits"))
		if err != nil {
			continue
		}
		out = append(out, daemon{pid: pid, comm: comm, nofile: n})
	}
	slices.SortFunc(out, func(a, b daemon) int { return a.pid - b.pid })
	return out
}

// openFilesLimit reads the soft "Max open files" of a /proc/<pid>/limits
// file: -1 when unlimited.
func openFilesLimit(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		if f[0] == "unlimited" {
			return -1, nil
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("%s has no Max open files line", path)
}

// conntrack compares net.netfilter.nf_conntrack_max with the connections
// the workers make, and the node's tracked connections with it; past it
// the kernel drops new connections ("nf_conntrack: table full, dropping
// packet"). Only when conntrack is loaded (its sysctls exist).
func (d *doctor) conntrack() {
	const name = "net.netfilter.nf_conntrack_max"
	v, err := d.sysctlInt(name)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	need := int64(d.o.Workers * conntrackPerWorker)
	if err != nil {
		d.unreadable("conntrack", name, err, need)
		return
	}
	fix := d.sysctlFix(setting{name, max(262144, nextPow2(2*need))}) + " (on the host: other namespaces see it read-only)"
	count, cerr := d.sysctlInt("net.netfilter.nf_conntrack_count")
	switch {
	case v < need:
		d.add("conntrack", Warn, fix, "%s is %d, below the ~%d connections %s may keep tracked (%d each, with 120 s of TIME_WAIT); past it new connections are dropped (\"nf_conntrack: table full\")",
			name, v, need, d.workers(), conntrackPerWorker)
	case cerr == nil && count*10 >= v*9:
		d.add("conntrack", Warn, fix, "%d of %s %d connections are tracked in this namespace; past it new connections are dropped (\"nf_conntrack: table full\")",
			count, name, v)
	default:
		d.add("conntrack", OK, "", "%s is %d, at least the ~%d connections of %s", name, v, need, d.workers())
	}
}
