package benchbridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/plugins/esb-bridge/bridge"
)

// usageOf executes bin once with command, through the rusage helper
// started from a thread in the node namespace, and returns the helper's
// report (written to a file in dir): bin's peak RSS and CPU time, and the
// helper's own peak RSS, a floor under bin's figure.
func (p *plugin) usageOf(helper, dir, bin, command, id string) (rusageReport, error) {
	var r rusageReport
	file := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.json", filepath.Base(bin), command, id))
	err := p.node.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, helper, file, bin)
		cmd.Env = p.env(command, id, p.workers[0].path)
		cmd.Stdin = bytes.NewReader(p.conf)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s %s: %w (stdout %q, stderr %q)", filepath.Base(bin), command, id, err, stdout.String(), stderr.String())
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return r, fmt.Errorf("read rusage report: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("decode rusage report %q: %w", b, err)
	}
	return r, nil
}

// rusageReport is what the rusage helper writes (rusage.Report).
type rusageReport struct {
	SelfMaxRSS  int64 `json:"selfMaxRSS"`
	MaxRSS      int64 `json:"maxRSS"`
	UserNanos   int64 `json:"userNanos"`
	SystemNanos int64 `json:"systemNanos"`
}

// measureUsage takes usageRuns ADD+DELs of esb-bridge, of the reference
// bridge and of host-local alone (with the reference's configuration, as
// bridge runs it), interleaved, and returns each process's use.
func measureUsage(helper, dir string, esb, ref *plugin) ([]*Usage, error) {
	hostLocal := filepath.Join(filepath.Dir(ref.bin), "host-local")
	type proc struct {
		p        *plugin
		bin      string
		add, del *Usage
	}
	procs := []proc{
		{esb, esb.bin,
			&Usage{Process: "esb-bridge ADD", Note: "IPAM in-process: the only process"},
			&Usage{Process: "esb-bridge DEL"}},
		{ref, ref.bin,
			&Usage{Process: "bridge ADD (reference)", Note: "wait4 counts the waited-for host-local too: RSS is max(bridge, host-local), CPU their sum"},
			&Usage{Process: "bridge DEL (reference)", Note: "as above"}},
		{ref, hostLocal,
			&Usage{Process: "host-local ADD alone", Note: "the reference's child, run alone with the same configuration"},
			&Usage{Process: "host-local DEL alone"}},
	}
	for k := range usageRuns {
		for j, pr := range procs {
			id := containerID(tagUsage, k*len(procs)+j)
			for _, v := range []struct {
				command string
				u       *Usage
			}{{"ADD", pr.add}, {"DEL", pr.del}} {
				r, err := pr.p.usageOf(helper, dir, pr.bin, v.command, id)
				if err != nil {
					return nil, fmt.Errorf("resource use: %w", err)
				}
				v.u.MaxRSS = append(v.u.MaxRSS, r.MaxRSS)
				v.u.CPU = append(v.u.CPU, time.Duration(r.UserNanos+r.SystemNanos))
				v.u.Floor = max(v.u.Floor, r.SelfMaxRSS)
			}
		}
	}
	for _, p := range []*plugin{esb, ref} {
		if err := p.checkGone(p.workers[:1]); err != nil {
			return nil, fmt.Errorf("%s after the resource-use runs: %w", p.label, err)
		}
	}
	var out []*Usage
	for _, pr := range procs {
		out = append(out, pr.add, pr.del)
	}
	return out, nil
}

// decompose samples, interleaved, the parts a plugin execution is made
// of: starting a process at all (/bin/true), starting each Go plugin
// without work (VERSION), and esb-bridge's ADD and DEL work without a
// process start (the bridge library's Plugin.Add and Del called from a
// thread in esb's node namespace, one attachment at a time).
func decompose(esb, ref *plugin) ([]*Part, error) {
	hostLocal := filepath.Join(filepath.Dir(ref.bin), "host-local")
	trueBin, err := exec.LookPath("true")
	if err != nil {
		return nil, fmt.Errorf("find true: %w", err)
	}
	version := []byte(`{"cniVersion":"1.1.0"}`)
	parts := []*Part{
		{What: "exec of /bin/true", Note: "the cost of any process start here"},
		{What: "esb-bridge VERSION", Note: "Go runtime start, package inits, skel; no work"},
		{What: "bridge VERSION (reference)", Note: "the same for the reference bridge"},
		{What: "host-local VERSION (reference)", Note: "the same for host-local, which bridge starts on every ADD and DEL"},
		{What: "esb-bridge ADD in-process", Note: "Plugin.Add without a process start: IPAM, bridge, veth, addresses, routes, isolation, anti-spoof guard; node holds no other attachment"},
		{What: "esb-bridge DEL in-process", Note: "Plugin.Del without a process start: guard, veth (the kernel's veth deletion included), IPAM"},
	}
	execs := []struct {
		bin string
		p   *plugin
	}{{trueBin, esb}, {esb.bin, esb}, {ref.bin, ref}, {hostLocal, ref}}
	pl := &bridge.Plugin{Stdout: io.Discard, Stderr: os.Stderr}
	for i := range partSamples {
		for j, e := range execs {
			err := e.p.node.Do(func(ns.NetNS) error {
				ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
				defer cancel()
				env := (&invoke.Args{Command: "VERSION", Path: e.p.cniPath}).AsEnv()
				t0 := time.Now()
				_, err := e.p.exec.ExecPlugin(ctx, e.bin, version, env)
				parts[j].Samples = append(parts[j].Samples, time.Since(t0))
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", parts[j].What, err)
			}
		}
		w := esb.workers[i%len(esb.workers)]
		args := &skel.CmdArgs{ContainerID: containerID(tagParts, i), Netns: w.path, IfName: ifName, Path: esb.cniPath, StdinData: esb.conf}
		err := esb.node.Do(func(ns.NetNS) error {
			t0 := time.Now()
			if err := pl.Add(args); err != nil {
				return fmt.Errorf("in-process ADD: %w", err)
			}
			t1 := time.Now()
			if err := pl.Del(args); err != nil {
				return fmt.Errorf("in-process DEL: %w", err)
			}
			parts[4].Samples = append(parts[4].Samples, t1.Sub(t0))
			parts[5].Samples = append(parts[5].Samples, time.Since(t1))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := esb.checkGone(esb.workers[:min(partSamples, len(esb.workers))]); err != nil {
		return nil, fmt.Errorf("%s after the in-process runs: %w", esb.label, err)
	}
	return parts, nil
}
