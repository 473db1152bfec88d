package buildinfo

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/version"
)

func TestPluginInfoEncodesAbout(t *testing.T) {
	var b bytes.Buffer
	if err := PluginInfo("esb-x", version.All).Encode(&b); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b.Bytes(), &raw); err != nil || raw["about"] != About("esb-x") {
		t.Errorf("VERSION result %s: %v", b.String(), err)
	}
	var dec version.PluginDecoder
	info, err := dec.Decode(b.Bytes())
	if err != nil || !slices.Equal(info.SupportedVersions(), version.All.SupportedVersions()) {
		t.Errorf("libcni decode: %v %v", info, err)
	}
}

func TestPrintPluginVersion(t *testing.T) {
	env := map[string]string{}
	get := func(k string) string { return env[k] }
	var b bytes.Buffer
	if !PrintPluginVersion([]string{"p", "--version"}, get, &b, "esb-x") || b.String() != About("esb-x")+"\n" {
		t.Errorf("--version: %q", b.String())
	}
	env["CNI_COMMAND"] = "ADD"
	if PrintPluginVersion([]string{"p", "--version"}, get, &b, "esb-x") {
		t.Error("a CNI call must reach skel")
	}
	delete(env, "CNI_COMMAND")
	if PrintPluginVersion([]string{"p"}, get, &b, "esb-x") {
		t.Error("no argument must reach skel")
	}
}
