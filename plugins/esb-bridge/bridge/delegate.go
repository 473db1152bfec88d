package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
)

// Delegation to an IPAM plugin other than esb-ipam, as the CNI spec asks of
// a main plugin: the plugin named by ipam.type is looked up in CNI_PATH and
// run with this process's CNI_* environment, CNI_COMMAND set to the verb,
// and the network configuration on stdin; a non-zero exit carries a CNI
// error on stdout.
//
// libcni's pkg/invoke does the same, but since v1.3 it links OpenTelemetry,
// net/http and crypto/tls into its callers (for trace propagation in the
// environment): 2.5 MB more binary and some sixty more page faults at every
// start of esb-bridge, on the path each ADD and DEL pays while delegation
// is the rare case. These forty lines keep the plugin lean.

// Delegator runs a delegated IPAM plugin: it returns the plugin's stdout, or
// its CNI error. The default is execDelegate.
type Delegator func(ctx context.Context, verb, pluginType string, stdin []byte) ([]byte, error)

func (p *Plugin) delegate(ctx context.Context, verb, pluginType string, stdin []byte) ([]byte, error) {
	if p.Delegate != nil {
		return p.Delegate(ctx, verb, pluginType, stdin)
	}
	return execDelegate(ctx, verb, pluginType, stdin)
}

// delegateAdd runs the delegated IPAM's ADD and converts its result.
func (p *Plugin) delegateAdd(ctx context.Context, pluginType string, stdin []byte) (*current.Result, error) {
	out, err := p.delegate(ctx, "ADD", pluginType, stdin)
	if err != nil {
		return nil, err
	}
	r, err := create.CreateFromBytes(out)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode the result of IPAM plugin %s", pluginType), err.Error())
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("convert the result of IPAM plugin %s", pluginType), err.Error())
	}
	return res, nil
}

// delegateVerb runs a delegated verb that returns no result (DEL, CHECK,
// GC, STATUS).
func (p *Plugin) delegateVerb(ctx context.Context, verb, pluginType string, stdin []byte) error {
	_, err := p.delegate(ctx, verb, pluginType, stdin)
	return err
}

func execDelegate(ctx context.Context, verb, pluginType string, stdin []byte) ([]byte, error) {
	path, err := findPlugin(pluginType, os.Getenv("CNI_PATH"))
	if err != nil {
		return nil, err
	}
	env := []string{"CNI_COMMAND=" + verb}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_COMMAND=") {
			env = append(env, kv)
		}
	}
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), nil
	case errors.As(err, &exit):
		var te types.Error
		if jerr := json.Unmarshal(stdout.Bytes(), &te); jerr != nil || te.Code == 0 && te.Msg == "" {
			return nil, types.NewError(types.ErrInternal, fmt.Sprintf("IPAM plugin %s %s failed (%v) without a CNI error", pluginType, verb, err), strings.TrimSpace(stdout.String()))
		}
		return nil, &te
	default:
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("run IPAM plugin %s", path), err.Error())
	}
}

// findPlugin returns the first executable named pluginType in the
// colon-separated cniPath.
func findPlugin(pluginType, cniPath string) (string, error) {
	if pluginType == "" || strings.ContainsRune(pluginType, '/') {
		return "", types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("ipam.type %q is not a plugin name", pluginType), "")
	}
	for _, dir := range filepath.SplitList(cniPath) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, pluginType)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("IPAM plugin %s not found in CNI_PATH %q", pluginType, cniPath), "")
}
