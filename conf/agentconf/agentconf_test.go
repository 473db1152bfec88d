package agentconf

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte("port: 8081\npool-min-idle: 2\nready-timeout: 3s\nsocket: /tmp/from-file.sock\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ESB_AGENT_POOL_MIN_IDLE": "4", "ESB_AGENT_SOCKET": "/tmp/from-env.sock"}
	c, err := Load([]string{"--config", file, "--socket", "/tmp/from-flag.sock"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Socket != "/tmp/from-flag.sock" || c.PoolMinIdle != 4 || c.Port != 8081 || c.ReadyTimeout != 3*time.Second {
		t.Errorf("flag > env > file > default broken: %+v", c)
	}
	if c.MaxWorkers != DefaultMaxWorkers || c.Runtime != "containerd" || c.StateFile != DefaultStateFile {
		t.Errorf("defaults: %+v", c)
	}
	for _, src := range []struct {
		args []string
		env  map[string]string
		file string
	}{
		{args: []string{"--state-file", "/tmp/s.db"}},
		{env: map[string]string{"ESB_AGENT_STATE_FILE": "/tmp/s.db"}},
		{file: "state-file: /tmp/s.db\n"},
	} {
		args := src.args
		if src.file != "" {
			f := filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(f, []byte(src.file), 0o600); err != nil {
				t.Fatal(err)
			}
			args = []string{"--config", f}
		}
		c, err := Load(args, func(k string) string { return src.env[k] }, io.Discard)
		if err != nil || c.StateFile != "/tmp/s.db" {
			t.Errorf("state-file from %+v: %q, %v", src, c.StateFile, err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	none := func(string) string { return "" }
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("prot: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--tcp-listen", "127.0.0.1:7000"}, nil, "requires mutual TLS"},
		{[]string{"--runtime", "podman"}, nil, `invalid runtime "podman"`},
		{[]string{"--port", "0"}, nil, "invalid port 0"},
		{[]string{"--config", bad}, nil, `config key "prot" is not a setting`},
		{nil, map[string]string{"ESB_AGENT_MAX_WORKERS": "many"}, "ESB_AGENT_MAX_WORKERS"},
		{[]string{"extra"}, nil, "unexpected arguments"},
		{[]string{"--state-file", ""}, nil, "invalid state-file"},
		{[]string{"--port", "65536"}, nil, "invalid port 65536"},
		{[]string{"--ready-timeout", "0s"}, nil, "invalid ready-timeout 0s"},
		{[]string{"--ready-timeout", "11m"}, nil, "invalid ready-timeout 11m0s"},
		{[]string{"--stop-grace", "-1s"}, nil, "invalid stop-grace -1s"},
		{[]string{"--nat-rules", "/x.yaml", "--nat-interval", "0s"}, nil, "invalid nat-interval 0s"},
		{[]string{"--default-memory", "1"}, nil, "invalid default-memory 1"},
		{[]string{"--max-workers", "1", "--pool-min-idle", "2"}, nil, "invalid pool-min-idle 2"},
		{[]string{"--max-parallel", "0"}, nil, "invalid max-workers, max-parallel"},
		{[]string{"--shim-group-size", "-1"}, nil, "invalid shim-group-size -1"},
		{[]string{"--shim-group-size", "65"}, nil, "invalid shim-group-size 65"},
		{[]string{"--runtime", "docker", "--shim-group-size", "4"}, nil, "runtime docker has none"},
		{[]string{"--runc-binary", "runc"}, nil, `invalid runc-binary "runc": must be an absolute path`},
		{[]string{"--runtime", "docker", "--runc-binary", "/usr/sbin/runc"}, nil, `invalid runc-binary "/usr/sbin/runc": it is containerd's shim's; runtime docker has none`},
		{[]string{"--metrics-listen", "9464"}, nil, `invalid metrics-listen "9464"`},
		{[]string{"--tcp-listen", "nowhere", "--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca"}, nil, `invalid tcp-listen "nowhere"`},
		{[]string{"--network", "../etc"}, nil, "invalid network"},
		{[]string{"--log-level", "loud"}, nil, `invalid log-level "loud"`},
		{[]string{"--socket", "", "--tcp-listen", ""}, nil, "invalid socket"},
		{nil, map[string]string{"ESB_AGENT_PORT": "-1"}, "invalid port -1"},
	}
	for _, tc := range tests {
		get := none
		if tc.env != nil {
			get = func(k string) string { return tc.env[k] }
		}
		_, err := Load(tc.args, get, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want %q", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestLoadFileErrors(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"port: [1]\n", "config key port"},
		{"ready-timeout: forever\n", "config key ready-timeout"},
		{"max-workers: -3\n", "invalid max-workers"},
		{"log-level: {a: b}\n", "log-level"},
		{"- a\n", "config "},
		{"port: 80\nport: 81\n", "config "},
		{"tcp-listen: 127.0.0.1:7443\n", "requires mutual TLS"},
	}
	for _, tc := range tests {
		file := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(file, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load([]string{"--config", file}, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// FuzzLoad feeds YAML files to the agent's configuration
// loader: it never panics, and what it accepts passes Validate and keeps
// the TCP listener behind mutual TLS.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"port: 8081\npool-min-idle: 2\nready-timeout: 3s\nsocket: /tmp/x.sock\n",
		"runtime: docker\ndocker-host: unix:///run/esbnet/docker.sock\nmax-workers: 10\n",
		"tcp-listen: 127.0.0.1:7443\ntls-cert: a\ntls-key: b\ntls-client-ca: c\nsocket: ''\n",
		"nat-rules: /etc/esb/nat.yaml\nnat-interval: 1ms\n",
		"default-memory: 1e9\nstop-grace: 0s\n",
		"log-level: DEBUG\nnetwork: esb2\n",
		"read-only-rootfs: true\n",
		"port: 0x50\n", "port: 1e3\n", "prot: 1\n", "config: x\n", "{}", "[]", "", "~", "port: !!binary AAAA\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load([]string{"--config", file}, func(string) string { return "" }, io.Discard)
		if err != nil {
			return
		}
		if verr := c.Validate(); verr != nil {
			t.Fatalf("accepted a config that does not validate: %v", verr)
		}
		if c.TCPListen != "" && (c.TLSCert == "" || c.TLSKey == "" || c.TLSClientCA == "") {
			t.Fatalf("accepted a TCP listener without mutual TLS: %+v", c)
		}
	})
}

// The file Write makes holds every Config key with a comment and
// its default, and loads back to the same configuration.
func TestWriteRoundTrip(t *testing.T) {
	none := func(string) string { return "" }
	def, err := Load(nil, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := Write(&b, def); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	lines := strings.Split(text, "\n")
	typ := reflect.TypeOf(def)
	for i := range typ.NumField() {
		key, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		at := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, key+": ") })
		if at < 2 {
			t.Errorf("key %s missing or without comments:\n%s", key, text)
			continue
		}
		if !strings.HasPrefix(lines[at-1], "# default: ") || !strings.HasPrefix(lines[at-2], "# ") || len(lines[at-2]) < 10 {
			t.Errorf("key %s: want its help and default as comments, got %q, %q", key, lines[at-2], lines[at-1])
		}
	}
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Load([]string{"--config", file}, none, io.Discard)
	if err != nil {
		t.Fatalf("load the written defaults: %v\n%s", err, text)
	}
	if !reflect.DeepEqual(got, def) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, def)
	}

	// Changed values survive the round trip too, and --print-config
	// reports the loaded settings.
	changed := def
	changed.Snapshotter, changed.DefaultMemory, changed.NATInterval, changed.Port = "native", 1<<30, 90*time.Second, 9090
	b.Reset()
	if err := Write(&b, changed); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = Load([]string{"--config", file, "--print-config"}, none, io.Discard)
	if !errors.Is(err, ErrPrintConfig) {
		t.Fatalf("--print-config: err %v, want ErrPrintConfig", err)
	}
	if !reflect.DeepEqual(got, changed) {
		t.Errorf("round trip of changed values:\n got %+v\nwant %+v", got, changed)
	}
	if !strings.Contains(b.String(), "# default: 8080\nport: 9090\n") {
		t.Errorf("a changed value should keep the default in its comment:\n%s", b.String())
	}
}

func TestConfigFileLargeNumbersAndEmpty(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"big.yaml": "default-memory: 268435456\n", "empty.yaml": "# nothing\n"} {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load([]string{"--config", file}, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if c.DefaultMemory != 268435456 {
			t.Errorf("%s: default-memory %d", name, c.DefaultMemory)
		}
	}
}

// A network other than esb derives its stack's socket, state, logs and
// runtime scopes; what is given explicitly stays.
func TestLoadDerivesStackNames(t *testing.T) {
	none := func(string) string { return "" }
	c, err := Load([]string{"--network", "esb2"}, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Socket != "/run/esb/esb2/agent.sock" || c.StateFile != "/run/esb/esb2/state.db" || c.LogDir != "/run/esb/esb2/workers" ||
		c.ContainerdNamespace != "esb2" || c.DockerNamespace != "esb2" {
		t.Errorf("derived: %+v", c)
	}
	env := func(k string) string { return map[string]string{"ESB_AGENT_SOCKET": "/tmp/a.sock"}[k] }
	if c, err := Load([]string{"--network", "esb2", "--state-file", "/tmp/s.db"}, env, io.Discard); err != nil ||
		c.Socket != "/tmp/a.sock" || c.StateFile != "/tmp/s.db" || c.LogDir != "/run/esb/esb2/workers" {
		t.Errorf("explicit settings: %+v, %v", c, err)
	}
	def, err := Load(nil, none, io.Discard)
	if err != nil || def.Socket != "/run/esb/agent.sock" || def.StateFile != DefaultStateFile || def.LogDir != DefaultLogDir ||
		def.ContainerdNamespace != "esb" || def.DockerNamespace != "esb" {
		t.Errorf("default network: %+v, %v", def, err)
	}
	if _, err := Load([]string{"--network", "esb-2"}, none, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "invalid network") {
		t.Errorf("network esb-2: %v, want invalid network", err)
	}
}
