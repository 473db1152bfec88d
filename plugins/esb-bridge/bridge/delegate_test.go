package bridge

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// writePlugin puts an executable shell script named name in dir.
func writePlugin(t *testing.T, dir, name, script string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestExecDelegate(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	// The first match in CNI_PATH wins; the plugin sees CNI_COMMAND set to
	// the verb, the rest of the environment, and the config on stdin.
	writePlugin(t, second, "ipam-a", `echo '{"cniVersion":"1.1.0","ips":[{"address":"10.88.7.9/16","gateway":"10.88.0.1"}]}'`)
	writePlugin(t, first, "ipam-a", `read conf; printf '{"cniVersion":"1.1.0","ips":[{"address":"10.88.0.2/16","gateway":"10.88.0.1"}],"dns":{"domain":"%s-%s-%s"}}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$conf"`)
	writePlugin(t, first, "ipam-fail", `echo '{"cniVersion":"1.1.0","code":100,"msg":"range exhausted","details":"all 3 taken"}'; exit 1`)
	writePlugin(t, first, "ipam-garbage", `echo 'not json'; exit 3`)
	if err := os.WriteFile(filepath.Join(first, "ipam-noexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CNI_PATH", first+":"+second)
	t.Setenv("CNI_COMMAND", "DEL")
	t.Setenv("CNI_CONTAINERID", "c1")
	p := &Plugin{}
	ctx := context.Background()

	res, err := p.delegateAdd(ctx, "ipam-a", []byte("x\n"))
	if err != nil {
		t.Fatalf("delegated ADD: %v", err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.88.0.2/16" || res.DNS.Domain != "ADD-c1-x" {
		t.Errorf("delegated ADD result %+v (dns %q), want 10.88.0.2/16 from the first CNI_PATH entry, run as ADD for c1 with the config on stdin", res.IPs, res.DNS.Domain)
	}

	err = p.delegateVerb(ctx, "DEL", "ipam-fail", nil)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 100 || te.Msg != "range exhausted" || te.Details != "all 3 taken" {
		t.Errorf("delegated error: got %v, want the plugin's own CNI error 100", err)
	}
	err = p.delegateVerb(ctx, "CHECK", "ipam-garbage", nil)
	if !errors.As(err, &te) || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "ipam-garbage CHECK failed") || te.Details != "not json" {
		t.Errorf("plugin failing without a CNI error: got %v", err)
	}
	for _, name := range []string{"ipam-missing", "ipam-noexec"} {
		err = p.delegateVerb(ctx, "DEL", name, nil)
		if !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(te.Msg, name) {
			t.Errorf("%s: got %v, want error 4 naming it", name, err)
		}
	}
	err = p.delegateVerb(ctx, "DEL", "../ipam-a", nil)
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig {
		t.Errorf("ipam.type with a path: got %v, want error 7", err)
	}
}
