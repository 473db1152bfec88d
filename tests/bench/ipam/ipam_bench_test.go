package benchipam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// The ways of running one ADD+DEL that the summary compares.
const (
	esbExec   = "esb-ipam"            // the esb-ipam binary, executed like a runtime does
	hostLocal = "host-local"          // the reference host-local v1.10.0 binary, executed the same way
	esbLib    = "esb-ipam in-process" // ipam.OpenBolt + Allocate / Release + Close, what one esb-ipam process does
)

// Fill sizes: addresses allocated before the samples. 10.88.0.0/16 has
// 65,533 usable addresses, so 60,000 leaves room for the samples.
var fills = []int{0, 1000, 10000, 60000}

const (
	network = conf.NetworkName
	subnet  = conf.DefaultSubnet
	gateway = conf.DefaultGateway
	ifName  = "eth0"
	// execTimeout bounds one plugin execution.
	execTimeout = 60 * time.Second
)

// samplesFor is how many ADD+DEL samples the summary takes per cell,
// whatever b.N is, so that -benchtime 1x still yields a p50. host-local
// walks every reservation file on ADD and again on DEL, which takes seconds
// at 60,000, so it gets fewer samples there.
func samplesFor(plugin string, fill int) int {
	switch {
	case plugin == esbLib:
		return 200
	case plugin == hostLocal && fill >= 60000:
		return 11
	case plugin == hostLocal:
		return 15
	default:
		return 25
	}
}

// benchEnv is what all cells share: one worker namespace, the plugin
// binaries and a root directory for the stores.
type benchEnv struct {
	netns    string
	cniPath  string
	bins     map[string]string // plugin name → binary
	root     string            // parent of every store
	fixtures map[string]*fixture
	runs     []*cellRun
	summary  Summary
	next     int // next sample container ID
}

// fixture is one filled store of one plugin.
type fixture struct {
	plugin string // esbExec or hostLocal (esbLib shares esbExec's store)
	fill   int
	conf   []byte     // the network configuration on stdin
	ipam   *conf.IPAM // esb-ipam's parsed configuration (nil for host-local)
	dir    string     // the plugin's dataDir
	rng    conf.Range // the IPv4 range both plugins hand out from
	filled map[netip.Addr]bool
}

// BenchmarkAddDel measures one ADD+DEL at each fill size: through the
// esb-ipam binary, through the reference host-local binary and, for
// reference, esb-ipam's library in-process. Each sub-benchmark times b.N
// ADD+DELs. When all have run, the summary takes samplesFor samples of each
// cell that ran, interleaved across cells (so its p50s mean something with
// -benchtime 1x and its ratios resist changing load), and prints its table
// to stdout.
func BenchmarkAddDel(b *testing.B) {
	nstest.RequirePrivileged(b)
	env := newBenchEnv(b)
	for _, plugin := range []string{esbExec, hostLocal, esbLib} {
		for _, fill := range fills {
			b.Run(fmt.Sprintf("%s/fill=%d", strings.ReplaceAll(plugin, " ", "-"), fill), func(b *testing.B) {
				env.benchCell(b, plugin, fill)
			})
		}
	}
	env.sample(b)
	env.verifyStores(b)
	targets := env.summary.Targets(esbExec, hostLocal, fills[len(fills)-1])
	if err := env.summary.Print(os.Stdout, targets); err != nil {
		b.Errorf("print summary: %v", err)
	}
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	env := &benchEnv{
		netns: nstest.NewNS(b).Path(),
		bins: map[string]string{
			esbExec:   filepath.Join(nstest.PluginDir(b), "esb-ipam"),
			hostLocal: nstest.Tool(b, "host-local"),
		},
		fixtures: map[string]*fixture{},
	}
	env.cniPath = strings.Join([]string{filepath.Dir(env.bins[esbExec]), filepath.Dir(env.bins[hostLocal])}, string(os.PathListSeparator))
	env.root = benchstat.Dir(b, "esbnet-bench-")
	env.summary = Summary{
		Title: "esb-ipam vs host-local v1.10.0: one ADD+DEL through the plugin binary",
		Notes: []string{
			fmt.Sprintf("subnet %s (65,533 usable), one IPv4 range; stores in %s (%s); %s/%s, %d CPUs, GOMAXPROCS %d; %s",
				subnet, env.root, benchstat.FSType(env.root), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339)),
			"each binary is executed as libcni's invoke.RawExec does (CNI_COMMAND=ADD then DEL, CNI_NETNS, CNI_IFNAME=eth0, CNI_PATH, config on stdin); " +
				"allocated = addresses held by other attachments before the samples; samples interleaved across cells in 15 rounds; in-process = ipam.OpenBolt + Update(Allocate) + Close, then the same with Release; " +
				"its ADD column (open→commit→close) bounds how long the store's lock is held per ADD",
		},
	}
	return env
}

// netConf returns the network configuration both binaries get on stdin:
// the same document but for the IPAM type and data directory.
func netConf(ipamType, dataDir string) []byte {
	return fmt.Appendf(nil, `{"cniVersion":%q,"name":%q,"type":"bridge","ipam":{"type":%q,"subnet":%q,"gateway":%q,"dataDir":%q,"routes":[{"dst":"0.0.0.0/0"}]}}`,
		conf.CNIVersion, network, ipamType, subnet, gateway, dataDir)
}

// cellRun is one cell of the summary and the operation that samples it.
type cellRun struct {
	cell *Cell
	want int // samples the summary takes
	op   func() (add, del time.Duration, err error)
}

// benchCell runs one sub-benchmark: b.N timed ADD+DELs, after making and
// checking the cell's store on first use and registering the cell for the
// summary.
func (env *benchEnv) benchCell(b *testing.B, plugin string, fill int) {
	run := env.cellRun(b, plugin, fill)
	b.ResetTimer()
	for range b.N {
		if _, _, err := run.op(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed())/float64(time.Millisecond)/float64(b.N), "ms/op")
}

func (env *benchEnv) cellRun(b *testing.B, plugin string, fill int) *cellRun {
	for _, r := range env.runs {
		if r.cell.Plugin == plugin && r.cell.Fill == fill {
			return r
		}
	}
	storeOf := plugin
	if plugin == esbLib {
		storeOf = esbExec
	}
	fx := env.fixture(b, storeOf, fill)
	r := &cellRun{cell: &Cell{Plugin: plugin, Fill: fill}, want: samplesFor(plugin, fill)}
	r.op = func() (add, del time.Duration, err error) { return env.execAddDel(plugin, fx) }
	if plugin == esbLib {
		r.op = func() (add, del time.Duration, err error) { return env.libAddDel(fx) }
	}
	env.runs = append(env.runs, r)
	env.summary.Cells = append(env.summary.Cells, r.cell)
	return r
}

// summaryRounds is how many rounds the summary's samples are spread over.
const summaryRounds = 15

// A cell stops taking summary samples early once they add up to
// cellBudget and it has at least minSamples, so a loaded machine (where
// host-local at 60,000 can take ten seconds an ADD+DEL) cannot stretch the
// run past its bound.
const (
	cellBudget = 100 * time.Second
	minSamples = 5
)

// sample takes the summary's samples of every cell that ran, interleaved:
// each of summaryRounds rounds takes its share of every cell's samples,
// starting at a different cell each round, so load that comes and goes on
// the machine weighs on all cells alike instead of skewing the ratios.
func (env *benchEnv) sample(b *testing.B) {
	b.Helper()
	start := time.Now()
	spent := make(map[*cellRun]time.Duration, len(env.runs))
	short := 0
	for round := range summaryRounds {
		for i := range env.runs {
			r := env.runs[(round+i)%len(env.runs)]
			for len(r.cell.AddDel) < (round+1)*r.want/summaryRounds {
				if len(r.cell.AddDel) >= minSamples && spent[r] > cellBudget {
					break
				}
				add, del, err := r.op()
				if err != nil {
					b.Fatal(err)
				}
				r.cell.Record(add, del)
				spent[r] += add + del
			}
		}
	}
	for _, r := range env.runs {
		if len(r.cell.AddDel) < r.want {
			short++
		}
	}
	note := fmt.Sprintf("%d cells sampled in %d interleaved rounds in %s", len(env.runs), summaryRounds, time.Since(start).Round(time.Second))
	if short > 0 {
		note += fmt.Sprintf("; %d of them stopped early at the per-cell budget of %s", short, cellBudget)
	}
	env.summary.Notes = append(env.summary.Notes, note)
}

// fixture returns plugin's store filled with fill addresses, making and
// checking it on first use.
func (env *benchEnv) fixture(b *testing.B, plugin string, fill int) *fixture {
	b.Helper()
	key := fmt.Sprintf("%s/%d", plugin, fill)
	if fx := env.fixtures[key]; fx != nil {
		return fx
	}
	dir := filepath.Join(env.root, fmt.Sprintf("%s-%d", plugin, fill))
	nc, err := conf.ParseIPAMNetConf(netConf(conf.IPAMType, dir))
	if err != nil {
		b.Fatalf("parse config: %v", err)
	}
	fx := &fixture{plugin: plugin, fill: fill, conf: netConf(plugin, dir), dir: dir, rng: nc.IPAM.V4}
	addrs, err := FillOrder(nc.IPAM.V4, fill)
	if err != nil {
		b.Fatal(err)
	}
	ids := FillIDs(fill, ifName)
	start := time.Now()
	switch plugin {
	case esbExec:
		fx.ipam = nc.IPAM
		got, err := FillESB(fx.ipam, ids)
		if err != nil {
			b.Fatalf("fill esb-ipam: %v", err)
		}
		if !slices.Equal(got, addrs) {
			b.Fatalf("esb-ipam filled other addresses than host-local gets (first %v, want %v)", got[:min(3, len(got))], addrs[:min(3, len(addrs))])
		}
	case hostLocal:
		if err := FillHostLocal(dir, network, ids, addrs); err != nil {
			b.Fatal(err)
		}
	}
	fx.filled = make(map[netip.Addr]bool, fill)
	for _, a := range addrs {
		fx.filled[a] = true
	}
	b.Logf("filled %s with %d addresses in %s", plugin, fill, time.Since(start).Round(time.Millisecond))
	if err := env.verifyFill(fx, ids, addrs); err != nil {
		b.Fatalf("fill of %s with %d addresses does not work: %v", plugin, fill, err)
	}
	env.fixtures[key] = fx
	return fx
}

// verifyFill proves the plugin sees the filled store: a new attachment
// gets an address outside the filled set (the next one in order), and
// an ADD for a filled attachment finds its reservation (esb-ipam returns
// the held address; host-local refuses a duplicate allocation).
func (env *benchEnv) verifyFill(fx *fixture, ids []ipam.AttachmentID, addrs []netip.Addr) error {
	next, err := FillOrder(fx.rng, fx.fill+1)
	if err != nil {
		return err
	}
	probe := ContainerID(TagProbe, fx.fill)
	got, err := env.add(fx, probe)
	if err != nil {
		return err
	}
	if fx.filled[got] {
		return fmt.Errorf("new attachment got %s, which the fill holds", got)
	}
	if got != next[fx.fill] {
		return fmt.Errorf("new attachment got %s, want %s (the address after the fill)", got, next[fx.fill])
	}
	if err := env.del(fx, probe); err != nil {
		return err
	}
	if fx.fill == 0 {
		return nil
	}
	last := ids[len(ids)-1]
	got, err = env.add(fx, last.ContainerID)
	switch fx.plugin {
	case esbExec:
		if err != nil {
			return fmt.Errorf("repeat ADD of filled %s: %w", last, err)
		}
		if got != addrs[len(addrs)-1] {
			return fmt.Errorf("repeat ADD of filled %s returned %s, want its %s", last, got, addrs[len(addrs)-1])
		}
	case hostLocal:
		if err == nil {
			return fmt.Errorf("ADD of filled %s succeeded with %s; want host-local's duplicate allocation error", last, got)
		}
		if !strings.Contains(err.Error(), "duplicate allocation") {
			return fmt.Errorf("ADD of filled %s: want host-local's duplicate allocation error, got: %w", last, err)
		}
	}
	return nil
}

// run executes a plugin binary the way a runtime does (libcni's
// invoke.RawExec): the CNI variables added to this process's environment,
// the configuration on stdin, the result or a CNI error JSON on stdout.
func (env *benchEnv) run(fx *fixture, command, containerID string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, env.bins[fx.plugin])
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+containerID,
		"CNI_NETNS="+env.netns,
		"CNI_IFNAME="+ifName,
		"CNI_PATH="+env.cniPath,
	)
	cmd.Stdin = bytes.NewReader(fx.conf)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ce types.Error
		if jerr := json.Unmarshal(stdout.Bytes(), &ce); jerr == nil && ce.Msg != "" {
			return nil, fmt.Errorf("%s %s %s: %w (stderr %q)", fx.plugin, command, containerID, &ce, stderr.String())
		}
		return nil, fmt.Errorf("%s %s %s: %w (stdout %q, stderr %q)", fx.plugin, command, containerID, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// add runs ADD through the plugin binary and returns the IPv4 address.
func (env *benchEnv) add(fx *fixture, containerID string) (netip.Addr, error) {
	out, err := env.run(fx, "ADD", containerID)
	if err != nil {
		return netip.Addr{}, err
	}
	r, err := current.NewResult(out)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s ADD result %q: %w", fx.plugin, out, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s ADD result: %w", fx.plugin, err)
	}
	if len(res.IPs) != 1 {
		return netip.Addr{}, fmt.Errorf("%s ADD returned %d addresses, want 1", fx.plugin, len(res.IPs))
	}
	a, ok := netip.AddrFromSlice(res.IPs[0].Address.IP)
	if !ok {
		return a, fmt.Errorf("%s ADD returned address %v", fx.plugin, res.IPs[0].Address.IP)
	}
	return a.Unmap(), nil
}

// del runs DEL through the plugin binary.
func (env *benchEnv) del(fx *fixture, containerID string) error {
	_, err := env.run(fx, "DEL", containerID)
	return err
}

// execAddDel runs one ADD and one DEL of a new attachment through the
// binary and checks the address is not one the fill holds.
func (env *benchEnv) execAddDel(plugin string, fx *fixture) (add, del time.Duration, err error) {
	id := ContainerID(TagSample, env.next)
	env.next++
	t0 := time.Now()
	a, err := env.add(fx, id)
	t1 := time.Now()
	if err != nil {
		return 0, 0, err
	}
	if err := env.del(fx, id); err != nil {
		return 0, 0, err
	}
	t2 := time.Now()
	if fx.filled[a] {
		return 0, 0, fmt.Errorf("%s handed out %s, which the fill holds", plugin, a)
	}
	return t1.Sub(t0), t2.Sub(t1), nil
}

// libAddDel does in-process what one esb-ipam ADD and one DEL do with the
// store: open (lock), one transaction, close (unlock).
func (env *benchEnv) libAddDel(fx *fixture) (add, del time.Duration, err error) {
	id := ipam.AttachmentID{ContainerID: ContainerID(TagSample, env.next), IfName: ifName}
	env.next++
	var a *ipam.Allocation
	t0 := time.Now()
	if err := withStore(fx.ipam, func(tx ipam.Txn) error {
		a, err = ipam.Allocate(tx, fx.ipam, id, time.Now())
		return err
	}); err != nil {
		return 0, 0, fmt.Errorf("allocate: %w", err)
	}
	t1 := time.Now()
	if err := withStore(fx.ipam, func(tx ipam.Txn) error {
		_, err := ipam.Release(tx, id)
		return err
	}); err != nil {
		return 0, 0, fmt.Errorf("release: %w", err)
	}
	t2 := time.Now()
	if fx.filled[a.IPs[0].Addr()] {
		return 0, 0, fmt.Errorf("in-process allocate handed out %s, which the fill holds", a.IPs[0].Addr())
	}
	return t1.Sub(t0), t2.Sub(t1), nil
}

func withStore(cfg *conf.IPAM, fn func(ipam.Txn) error) error {
	s, err := OpenESB(cfg)
	if err != nil {
		return err
	}
	return errors.Join(s.Update(fn), s.Close())
}

// verifyStores checks every DEL undid its ADD: each store holds exactly
// its fill.
func (env *benchEnv) verifyStores(b *testing.B) {
	b.Helper()
	for _, fx := range env.fixtures {
		var used int
		switch fx.plugin {
		case esbExec:
			u, err := ESBUsage(fx.ipam)
			if err != nil {
				b.Errorf("read esb-ipam store: %v", err)
				continue
			}
			used = int(u)
		case hostLocal:
			u, err := HostLocalUsage(fx.dir, network)
			if err != nil {
				b.Errorf("read host-local store: %v", err)
				continue
			}
			used = u
		}
		if used != fx.fill {
			b.Errorf("%s store filled with %d holds %d addresses after the benchmark", fx.plugin, fx.fill, used)
		}
	}
}
