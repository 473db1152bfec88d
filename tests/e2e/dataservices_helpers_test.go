package e2e

import (
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// The data services of ESB in the node, as production runs them behind the
// local proxy: an S3 API server (gofakes3), a DynamoDB API server
// (dynalite) and VictoriaLogs, each on the node's loopback, HAProxy in
// front on the node address, and the gateway's ports forwarded to HAProxy.
// Workers name them s3-storage, database and victorialogs (the agent's
// resolver).
type dataService struct {
	name    string // the name workers use
	port    int    // the gateway's port, as in ESB's settings
	backend string // where the server listens in the node
	front   string // HAProxy's frontend in the node
}

var dataServices = []dataService{
	{"s3-storage", 9000, "127.0.0.1:19190", nodeAddr + ":29000"},
	{"database", 8000, "127.0.0.1:19180", nodeAddr + ":28000"},
	{"victorialogs", 9428, "127.0.0.1:19428", nodeAddr + ":29428"},
}

// functionEnv is the environment a function worker gets, as the ESB
// Gateway hands it over: the services by name.
func functionEnv(function string) map[string]string {
	return map[string]string{
		"AWS_ENDPOINT_URL_S3":       "http://s3-storage:9000",
		"AWS_ENDPOINT_URL_DYNAMODB": "http://database:8000",
		"VICTORIALOGS_URL":          "http://victorialogs:9428",
		"AWS_LAMBDA_FUNCTION_NAME":  function,
		"AWS_REGION":                "us-east-1",
		"AWS_ACCESS_KEY_ID":         "esb",
		"AWS_SECRET_ACCESS_KEY":     "esb-secret",
	}
}

// startDataServices starts the three servers and HAProxy in the node and
// returns the agent flags that forward and name them.
func (e *env) startDataServices() []string {
	e.t.Helper()
	haproxy := nstest.LookPath(e.t, "haproxy")
	tools := filepath.Dir(nstest.ToolsDir())
	dynalite := filepath.Join(tools, "dynalite-4.0.0", "node_modules", ".bin", "dynalite")
	if _, err := os.Stat(dynalite); err != nil {
		nstest.Unavailable(e.t, "dynalite is not installed (run scripts/deps.sh): %v", err)
	}
	e.addNodeAddr()
	dir := e.t.TempDir()
	s3, ddb, logs := dataServices[0], dataServices[1], dataServices[2]
	e.runInNode("gofakes3", s3.backend, nstest.Tool(e.t, "gofakes3"), "-host", s3.backend, "-backend", "memory", "-quiet")
	e.runInNode("dynalite", ddb.backend, dynalite, "--host", "127.0.0.1", "--port", ddb.backend[strings.LastIndex(ddb.backend, ":")+1:], "--createTableMs", "0")
	e.runInNode("victoria-logs", logs.backend, nstest.Tool(e.t, "victoria-logs"), "-httpListenAddr", logs.backend,
		"-storageDataPath", filepath.Join(dir, "vl"), "-loggerLevel", "ERROR")

	cfg := "global\n\tmaxconn 256\n\ndefaults\n\tmode http\n\ttimeout connect 2s\n\ttimeout client 30s\n\ttimeout server 30s\n"
	nat := "forwards:\n"
	services := []string{}
	for _, s := range dataServices {
		cfg += fmt.Sprintf("\nfrontend fe_%[1]s\n\tbind %[2]s\n\tdefault_backend be_%[1]s\n\nbackend be_%[1]s\n\tserver s1 %[3]s\n", s.name, s.front, s.backend)
		nat += fmt.Sprintf("  - {proto: tcp, port: %d, to: %q}\n", s.port, s.front)
		services = append(services, fmt.Sprintf("%s=%d", s.name, s.port))
	}
	path := filepath.Join(dir, "haproxy.cfg")
	rules := filepath.Join(dir, "nat.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(rules, []byte(nat), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.runInNode("haproxy", dataServices[len(dataServices)-1].front, haproxy, "-f", path, "-db")
	return []string{"-nat-rules", rules, "-services", strings.Join(services, ",")}
}

var functionImage stacktest.ScriptImage

// useFunctionImage builds and pushes the tests/images/function image once per test
// binary (scripts/function-image.sh builds nothing when the registry has
// it), pre-pulls it for containerd, and makes it the env's image.
func (e *env) useFunctionImage() {
	e.t.Helper()
	e.image = functionImage.Ref(e.t, 10*time.Minute, "scripts/function-image.sh", "ESB_REGISTRY="+e.stack.Registry)
	if e.rt == stacktest.Containerd {
		e.ctr("images", "pull", "--plain-http", "--snapshotter", e.stack.Snapshotter, e.image)
	}
}

// queryLogs runs a LogsQL query on VictoriaLogs from the node and returns
// the JSON lines it answers.
func (e *env) queryLogs(query string) (string, error) {
	u := "http://" + dataServices[2].backend + "/select/logsql/query?" + neturl.Values{"query": {query}}.Encode()
	resp, err := e.nodeClient(invokeTimeout).Get(u)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("query %q: %s: %s", query, resp.Status, b)
	}
	return string(b), nil
}
