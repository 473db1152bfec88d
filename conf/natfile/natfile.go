// Package natfile reads NAT rule files: YAML or JSON (JSON is YAML),
// validated by conf.DecodeNATRules. It is apart from conf so that the CNI
// plugins, which import conf and start once per CNI call, link no YAML
// decoder.
package natfile

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/edge-serverless-box/esbnet/conf"
)

// Load reads and validates a rule file; errors start with the file's name.
func Load(path string) (*conf.NATRules, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read NAT rules: %w", err)
	}
	r, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return r, nil
}

// Parse validates a rule set written as YAML or JSON. Errors name the
// field: "forwards[1].port", "egress", ... Files above conf.MaxFileBytes
// are refused before decoding.
func Parse(data []byte) (*conf.NATRules, error) {
	if len(data) > conf.MaxFileBytes {
		return nil, &conf.DecodeError{Err: fmt.Errorf("NAT rules are %d bytes, at most %d", len(data), conf.MaxFileBytes)}
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, &conf.DecodeError{Err: err}
	}
	return conf.DecodeNATRules(js)
}
