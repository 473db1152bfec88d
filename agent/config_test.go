package agent

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadDaemonConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte("port: 8081\npool-min-idle: 2\nready-timeout: 3s\nsocket: /tmp/from-file.sock\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ESB_AGENT_POOL_MIN_IDLE": "4", "ESB_AGENT_SOCKET": "/tmp/from-env.sock"}
	c, err := LoadDaemonConfig([]string{"--config", file, "--socket", "/tmp/from-flag.sock"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Socket != "/tmp/from-flag.sock" || c.PoolMinIdle != 4 || c.Port != 8081 || c.ReadyTimeout != 3*time.Second {
		t.Errorf("flag > env > file > default broken: %+v", c)
	}
	if c.MaxWorkers != DefaultConfig().MaxWorkers || c.Runtime != "containerd" || c.StateFile != DefaultStateFile {
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
		c, err := LoadDaemonConfig(args, func(k string) string { return src.env[k] }, io.Discard)
		if err != nil || c.StateFile != "/tmp/s.db" {
			t.Errorf("state-file from %+v: %q, %v", src, c.StateFile, err)
		}
	}
}

func TestLoadDaemonConfigErrors(t *testing.T) {
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
	}
	for _, tc := range tests {
		get := none
		if tc.env != nil {
			get = func(k string) string { return tc.env[k] }
		}
		_, err := LoadDaemonConfig(tc.args, get, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want %q", tc.args, tc.env, err, tc.want)
		}
	}
}
