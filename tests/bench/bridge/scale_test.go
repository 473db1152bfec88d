package benchbridge

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/plugins/esb-bridge/bridge"
	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

const (
	// scaleHeld is how many attachments the node holds in the second
	// half of BenchmarkBridgeAtScale: the density target of issue 17.
	scaleHeld = 1000
	// scaleSamples is how many probe ADD+DELs each half takes of each
	// kind (in-process and executed).
	scaleSamples = 40

	tagScaleHeld  byte = 0x08
	tagScaleProbe byte = 0x09
)

// scaleRow is what one half of BenchmarkBridgeAtScale measured.
type scaleRow struct {
	held                           int
	addIn, delIn, addExec, delExec benchstat.Samples
}

// BenchmarkBridgeAtScale measures how esb-bridge's ADD and DEL grow with
// the attachments the node already holds, apart from the machine's load:
// probe ADD+DELs (each both in-process, the bridge library's Plugin.Add
// and Del, and executed as libcni does) on an empty node, then on the
// same node holding 1,000 attachments (namespaces only, no processes in
// them: 1,000 bridge ports, anti-spoof elements and addresses in the
// store). The density benchmark's ADD at 1,000 live workers adds the cost
// of starting a process on a machine running 2,000 more of them.
func BenchmarkBridgeAtScale(b *testing.B) {
	nstest.RequirePrivileged(b)
	start := time.Now()
	esb := newESB(b, filepath.Join(benchstat.Dir(b, "esbnet-benchscale-"), "esb"))
	esb.workers = make([]worker, scaleHeld+scaleSamples)
	for i := range esb.workers {
		n := nstest.NewNS(b)
		esb.workers[i] = worker{ns: n, path: n.Path()}
	}
	held, probes := esb.workers[:scaleHeld], esb.workers[scaleHeld:]
	if err := esb.warmUp(); err != nil {
		b.Fatal(err)
	}
	empty, err := esb.probeScale(probes, 0)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, len(held))
	for i := range ids {
		ids[i] = containerID(tagScaleHeld, i)
	}
	adds, fill, err := esb.phase("ADD", held, ids, 8, true)
	if err != nil {
		b.Fatalf("hold %d attachments: %v", scaleHeld, err)
	}
	outs := make([][]byte, len(adds))
	for i, a := range adds {
		outs[i] = a.out
	}
	if err := esb.checkAdded(held, outs); err != nil {
		b.Fatalf("after holding %d attachments: %v", scaleHeld, err)
	}
	full, err := esb.probeScale(probes, scaleHeld)
	if err != nil {
		b.Fatal(err)
	}
	if err := esb.checkAdded(held, outs); err != nil {
		b.Fatalf("the probes disturbed the %d held attachments: %v", scaleHeld, err)
	}
	_, drain, err := esb.phase("DEL", held, ids, 8, true)
	if err != nil {
		b.Fatalf("release the held attachments: %v", err)
	}
	if err := esb.checkGone(esb.workers); err != nil {
		b.Fatalf("after releasing the held attachments: %v", err)
	}
	notes := []string{
		fmt.Sprintf("%s, %d probe ADD+DELs a row, each in-process then executed, one at a time; the held attachments were added and removed 8 at a time (%s and %s)",
			esbLabel, scaleSamples, fill.Round(time.Millisecond), drain.Round(time.Millisecond)),
		fmt.Sprintf("load average (1, 5, 15 min) %s after the run, which took %s", benchstat.LoadAverage(), time.Since(start).Round(time.Second)),
	}
	fmt.Print(scaleReport(notes, empty, full))
	for _, m := range []struct {
		name     string
		at0, atN benchstat.Samples
	}{{"ADD-in-process", empty.addIn, full.addIn}, {"ADD-exec", empty.addExec, full.addExec}} {
		if r, ok := benchstat.Ratio(m.atN.P50(), m.at0.P50()); ok {
			b.ReportMetric(r, fmt.Sprintf("%s-p50-at%d/at0", m.name, scaleHeld))
		}
	}
}

// probeScale runs scaleSamples probe attachments, each added and deleted
// in-process and then through the plugin's binary, from the node
// namespace, while the node holds held other attachments.
func (p *plugin) probeScale(probes []worker, held int) (scaleRow, error) {
	row := scaleRow{held: held}
	pl := &bridge.Plugin{Stdout: io.Discard, Stderr: os.Stderr}
	err := p.node.Do(func(ns.NetNS) error {
		for i, w := range probes {
			// IDs of each kind and half apart: 2*held+i in-process, and
			// scaleSamples further on executed.
			id := containerID(tagScaleProbe, 2*held+i)
			args := &skel.CmdArgs{ContainerID: id, Netns: w.path, IfName: ifName, Path: p.cniPath, StdinData: p.conf}
			t0 := time.Now()
			if err := pl.Add(args); err != nil {
				return fmt.Errorf("in-process ADD at %d held: %w", held, err)
			}
			t1 := time.Now()
			if err := pl.Del(args); err != nil {
				return fmt.Errorf("in-process DEL at %d held: %w", held, err)
			}
			row.addIn = append(row.addIn, t1.Sub(t0))
			row.delIn = append(row.delIn, time.Since(t1))
			id = containerID(tagScaleProbe, 2*held+scaleSamples+i)
			_, d, err := p.run(context.Background(), "ADD", id, w.path)
			if err != nil {
				return err
			}
			row.addExec = append(row.addExec, d)
			if _, d, err = p.run(context.Background(), "DEL", id, w.path); err != nil {
				return err
			}
			row.delExec = append(row.delExec, d)
		}
		return nil
	})
	if err != nil {
		return row, err
	}
	return row, p.checkStored(held)
}

// scaleReport renders the two halves side by side, with the issue's
// limit on ADD's growth.
func scaleReport(notes []string, empty, full scaleRow) string {
	var b strings.Builder
	benchstat.WriteHead(&b, fmt.Sprintf("esb-bridge ADD and DEL on an empty node and on a node holding %d attachments", full.held), notes)
	fmt.Fprintf(&b, "| p50 (p95) ms | %d held | %d held | ratio |\n| --- | ---: | ---: | ---: |\n", empty.held, full.held)
	for _, r := range []struct {
		what     string
		at0, atN benchstat.Samples
	}{
		{"ADD in-process (Plugin.Add)", empty.addIn, full.addIn},
		{"DEL in-process (Plugin.Del)", empty.delIn, full.delIn},
		{"ADD executed (esb-bridge process)", empty.addExec, full.addExec},
		{"DEL executed (esb-bridge process)", empty.delExec, full.delExec},
	} {
		ratio := "–"
		if x, ok := benchstat.Ratio(r.atN.P50(), r.at0.P50()); ok {
			ratio = fmt.Sprintf("%.2f×", x)
		}
		fmt.Fprintf(&b, "| %s | %s (%s) | %s (%s) | %s |\n", r.what,
			benchstat.MsN(r.at0.P50(), 1), benchstat.MsN(r.at0.P95(), 1), benchstat.MsN(r.atN.P50(), 1), benchstat.MsN(r.atN.P95(), 1), ratio)
	}
	b.WriteString("\n")
	benchstat.WriteTargets(&b, []benchstat.Target{
		benchstat.RatioTarget(fmt.Sprintf("ADD p50 executed, %d held / empty", full.held), full.addExec.P50(), empty.addExec.P50(), 1.1,
			"issue 17's ADD limit, here without the load of live workers"),
	})
	return b.String()
}
