package esbnet_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/edge-serverless-box/esbnet"

// mayImport is the layout of docs/architecture.md as import rules: for
// each part of the tree, the esbnet packages its (non-test) files may
// import. A package takes the rule of its longest matching entry; tests/
// may import anything and has no entry. Dependencies point one way:
// conf <- ipam / nat <- plugins; conf <- shim <- agent <- commands.
var mayImport = map[string][]string{
	"conf":               {},
	"conf/agentconf":     {"conf"},
	"conf/natfile":       {"conf"},
	"conf/confdir":       {"conf"},
	"ipam":               {"conf"},
	"nat":                {"conf"},
	"plugins":            {"conf", "ipam", "nat", "plugins", "internal/buildinfo"},
	"shim":               {"conf", "shim"},
	"agent":              {"conf", "nat", "shim", "agent", "internal/buildinfo"},
	"agent/api":          {},
	"internal/buildinfo": {},
	"internal/testpki":   {},
	"internal":           {"conf", "ipam", "nat", "agent/api", "internal"},
	"cmd":                {"internal", "conf"},
	"cmd/esb-node":       {"internal", "conf", "cmd/esb-node"},
}

// Rules on what a package imports from outside the module or links (its
// whole -deps closure), by the package (or tree) they apply to.
var (
	// conf is shared by the plugins and the agent: the standard library
	// and the CNI types only. Its subpackages may add the YAML decoder.
	onlyLibraries = map[string][]string{
		"conf":           {"github.com/containernetworking/cni/pkg/types"},
		"conf/agentconf": {"sigs.k8s.io/yaml"},
		"conf/natfile":   {"sigs.k8s.io/yaml"},
	}
	// ipam is a pure library: no CNI package (the verbs are esb-ipam's,
	// in plugins/esb-ipam/ipamplugin).
	noDirect = map[string][]string{
		"ipam": {"github.com/containernetworking/"},
	}
	// What a tree must never link: the plugins no YAML decoder (every
	// container start execs them), client-go only esb-node (Kubernetes
	// imports stay in cmd/esb-node), esbctl no runtime client (entries of
	// this module match one package, others any path containing them).
	neverLinks = map[string][]string{
		"plugins":    {"yaml", "k8s.io/client-go"},
		"agent":      {"k8s.io/client-go"},
		"cmd/esbctl": {"github.com/containerd/containerd", "github.com/docker/docker", module + "/agent", module + "/shim", "k8s.io/client-go"},
	}
)

// pkg is one package of `go list -deps`.
type pkg struct {
	path     string
	standard bool
	imports  []string
}

// TestImportDirections fails when an import runs against docs/architecture.md's
// arrows, or a binary links what it must not. It reads the real graph with
// `go list -deps ./...` (no root, no daemons).
func TestImportDirections(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the imports: %v", err)
	}
	cmd := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}} {{join .Imports \" \"}}", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs, err := parseList(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 20 || pkgs[module+"/conf"] == nil || pkgs[module+"/plugins/esb-bridge"] == nil {
		t.Fatalf("go list returned %d packages, without conf or esb-bridge: not this module's graph", len(pkgs))
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// TestImportRulesCatchViolations plants one violation of each kind in a
// small graph: the check above must name each.
func TestImportRulesCatchViolations(t *testing.T) {
	m := func(p string) string { return module + "/" + p }
	clean := map[string]*pkg{
		m("conf"):                      {path: m("conf"), imports: []string{"fmt", "github.com/containernetworking/cni/pkg/types"}},
		m("conf/natfile"):              {path: m("conf/natfile"), imports: []string{m("conf"), "sigs.k8s.io/yaml"}},
		m("ipam"):                      {path: m("ipam"), imports: []string{m("conf"), "go.etcd.io/bbolt"}},
		m("plugins/esb-bridge/bridge"): {path: m("plugins/esb-bridge/bridge"), imports: []string{m("conf"), m("ipam")}},
		m("shim"):                      {path: m("shim"), imports: []string{m("conf")}},
		m("agent"):                     {path: m("agent"), imports: []string{m("shim"), m("conf/natfile")}},
		m("internal/cli"):              {path: m("internal/cli"), imports: []string{m("conf")}},
		m("cmd/esbctl"):                {path: m("cmd/esbctl"), imports: []string{m("internal/cli")}},
		"fmt":                          {path: "fmt", standard: true},
		"github.com/containernetworking/cni/pkg/types": {path: "github.com/containernetworking/cni/pkg/types", imports: []string{"fmt"}},
		"sigs.k8s.io/yaml":                {path: "sigs.k8s.io/yaml"},
		"go.etcd.io/bbolt":                {path: "go.etcd.io/bbolt"},
		"github.com/docker/docker/client": {path: "github.com/docker/docker/client"},
	}
	if v := violations(clean); len(v) != 0 {
		t.Fatalf("clean graph: %q", v)
	}
	for _, tc := range []struct {
		from, to, want string
	}{
		{"plugins/esb-bridge/bridge", m("agent"), "plugins/esb-bridge/bridge imports " + m("agent")},
		{"internal/cli", m("agent"), "internal/cli imports " + m("agent")},
		{"shim", m("agent"), "shim imports " + m("agent")},
		{"conf", "sigs.k8s.io/yaml", "conf imports sigs.k8s.io/yaml"},
		{"ipam", "github.com/containernetworking/cni/pkg/types", "ipam imports github.com/containernetworking/cni/pkg/types"},
		{"plugins/esb-bridge/bridge", m("conf/natfile"), "links sigs.k8s.io/yaml"},
		{"internal/cli", "github.com/docker/docker/client", "cmd/esbctl links github.com/docker/docker/client"},
	} {
		g := map[string]*pkg{}
		for k, p := range clean {
			c := *p
			c.imports = slices.Clone(p.imports)
			g[k] = &c
		}
		g[m(tc.from)].imports = append(g[m(tc.from)].imports, tc.to)
		if _, ok := g[tc.to]; !ok {
			g[tc.to] = &pkg{path: tc.to}
		}
		v := violations(g)
		if !slices.ContainsFunc(v, func(s string) bool { return strings.Contains(s, tc.want) }) {
			t.Errorf("%s -> %s: violations %q, want one saying %q", tc.from, tc.to, v, tc.want)
		}
	}
}

func parseList(out []byte) (map[string]*pkg, error) {
	pkgs := map[string]*pkg{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			return nil, fmt.Errorf("go list: bad line %q", sc.Text())
		}
		pkgs[f[0]] = &pkg{path: f[0], standard: f[1] == "true", imports: f[2:]}
	}
	return pkgs, sc.Err()
}

// violations lists every broken rule of the graph, one line each.
func violations(pkgs map[string]*pkg) []string {
	var v []string
	for _, p := range pkgs {
		rel, ok := strings.CutPrefix(p.path, module+"/")
		if !ok || under(rel, "tests") {
			continue
		}
		if rule, ok := longest(mayImport, rel); ok {
			for _, imp := range p.imports {
				to, ours := strings.CutPrefix(imp, module+"/")
				if ours && !slices.ContainsFunc(mayImport[rule], func(a string) bool { return under(to, a) }) {
					v = append(v, fmt.Sprintf("%s imports %s: %s/ may import only %q (docs/architecture.md, Layout)", rel, imp, rule, mayImport[rule]))
				}
			}
		} else {
			v = append(v, fmt.Sprintf("%s is in no part of docs/architecture.md's layout: add it to mayImport", rel))
		}
		if libs, ok := onlyLibraries[rel]; ok {
			for _, imp := range p.imports {
				if dep := pkgs[imp]; !strings.HasPrefix(imp, module+"/") && (dep == nil || !dep.standard) && !slices.Contains(libs, imp) {
					v = append(v, fmt.Sprintf("%s imports %s: only the standard library and %q", rel, imp, libs))
				}
			}
		}
		if rule, ok := longest(noDirect, rel); ok {
			for _, imp := range p.imports {
				for _, bad := range noDirect[rule] {
					if strings.HasPrefix(imp, bad) {
						v = append(v, fmt.Sprintf("%s imports %s: %s/ imports no %s* package", rel, imp, rule, bad))
					}
				}
			}
		}
		if rule, ok := longest(neverLinks, rel); ok {
			for _, dep := range closure(pkgs, p.path) {
				for _, bad := range neverLinks[rule] {
					if dep == bad || (!strings.HasPrefix(bad, module) && strings.Contains(dep, bad)) {
						v = append(v, fmt.Sprintf("%s links %s (through %s): %s/ must not link %s", rel, dep, path(pkgs, p.path, dep), rule, bad))
					}
				}
			}
		}
	}
	slices.Sort(v)
	return v
}

// under tells whether rel is the package dir or inside it.
func under(rel, dir string) bool { return rel == dir || strings.HasPrefix(rel, dir+"/") }

// longest returns the longest key of rules that rel is under.
func longest[V any](rules map[string]V, rel string) (string, bool) {
	best := ""
	for k := range rules {
		if under(rel, k) && len(k) > len(best) {
			best = k
		}
	}
	return best, best != ""
}

// closure returns every package root links, itself excluded.
func closure(pkgs map[string]*pkg, root string) []string {
	seen := map[string]bool{root: true}
	queue := []string{root}
	var out []string
	for len(queue) > 0 {
		p := pkgs[queue[0]]
		queue = queue[1:]
		if p == nil {
			continue
		}
		for _, imp := range p.imports {
			if !seen[imp] {
				seen[imp] = true
				out = append(out, imp)
				queue = append(queue, imp)
			}
		}
	}
	return out
}

// path returns one import chain from root to dep, for the message.
func path(pkgs map[string]*pkg, root, dep string) string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == dep {
			var chain []string
			for c := dep; c != ""; c = prev[c] {
				chain = append([]string{strings.TrimPrefix(c, module+"/")}, chain...)
			}
			return strings.Join(chain, " -> ")
		}
		if p := pkgs[cur]; p != nil {
			for _, imp := range p.imports {
				if _, ok := prev[imp]; !ok {
					prev[imp] = cur
					queue = append(queue, imp)
				}
			}
		}
	}
	return "?"
}
