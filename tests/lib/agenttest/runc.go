package agenttest

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// RuncVersion is the first line of `runc --version` of RuncBinary (or of
// runc on PATH), with its path when it is not the default, for the reports.
func (c *Containerd) RuncVersion(ctx context.Context) string {
	runc := "runc"
	if c.RuncBinary != "" {
		runc = c.RuncBinary
	}
	out, err := exec.CommandContext(ctx, runc, "--version").Output()
	if err != nil {
		return fmt.Sprintf("%s --version: %v", runc, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	if c.RuncBinary != "" {
		line += " (" + c.RuncBinary + ")"
	}
	return line
}
