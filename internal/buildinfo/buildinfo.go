// Package buildinfo carries the version stamped into every esbnet binary.
package buildinfo

// Version is set at build time with -ldflags "-X .../buildinfo.Version=...".
var Version = "dev"

// About returns the line a plugin prints when run without CNI_COMMAND.
func About(name string) string { return name + " " + Version + " (esbnet)" }
