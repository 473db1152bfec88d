package agent

import (
	"strings"

	"github.com/edge-serverless-box/esbnet/conf/agentconf"
)

// DaemonConfig is esb-agent's configuration (flags, environment, YAML
// file). Its schema and validation live in conf/agentconf, which esbctl
// reads without linking the agent.
type DaemonConfig = agentconf.Config

func splitList(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
