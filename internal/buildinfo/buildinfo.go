// Package buildinfo carries the version stamped into every esbnet binary.
package buildinfo

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/containernetworking/cni/pkg/version"
)

// Version is set at build time with -ldflags "-X .../buildinfo.Version=...".
var Version = "dev"

// About returns the line a plugin prints when run without CNI_COMMAND
// (skel writes it to stderr) or with --version (to stdout).
func About(name string) string { return name + " " + Version + " (esbnet)" }

// IsVersionFlag reports whether a command line asks for the version: its
// first argument is --version, -version or version.
func IsVersionFlag(args []string) bool {
	return len(args) > 1 && (args[1] == "--version" || args[1] == "-version" || args[1] == "version")
}

// PrintPluginVersion answers "<plugin> --version" run by hand (no
// CNI_COMMAND in the environment): it prints About(name) to w and reports
// true, so the plugin's main returns before skel. A CNI call is never
// affected: runtimes set CNI_COMMAND and pass no arguments.
func PrintPluginVersion(args []string, getenv func(string) string, w io.Writer, name string) bool {
	if getenv("CNI_COMMAND") != "" || !IsVersionFlag(args) {
		return false
	}
	_, _ = fmt.Fprintln(w, About(name))
	return true
}

// PluginInfo wraps a plugin's CNI version information so that its VERSION
// result also names the build in an "about" field, beside the spec's
// "cniVersion" and "supportedVersions" (which clients such as libcni read;
// they ignore the extra field).
func PluginInfo(name string, inner version.PluginInfo) version.PluginInfo {
	return pluginInfo{PluginInfo: inner, about: About(name)}
}

type pluginInfo struct {
	version.PluginInfo
	about string
}

// Encode writes the VERSION result with the "about" field.
func (p pluginInfo) Encode(w io.Writer) error {
	return json.NewEncoder(w).Encode(struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
		About             string   `json:"about"`
	}{version.Current(), p.SupportedVersions(), p.about})
}
