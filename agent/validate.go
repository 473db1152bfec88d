package agent

import (
	"regexp"
	"strings"
	"unicode"

	"github.com/distribution/reference"

	"github.com/edge-serverless-box/esbnet/conf/agentconf"
)

// Limits on acquire requests.
const (
	MaxEnvVars     = 256
	MaxEnvBytes    = 64 << 10
	MaxIDLen       = 128
	MinMemoryBytes = agentconf.MinMemoryBytes
	MaxMemoryBytes = agentconf.MaxMemoryBytes
	MinCPUMillis   = 10
	MaxCPUMillis   = 64000
)

var (
	functionRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	envKeyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,255}$`)
	// lambdaNameRE is Lambda's rule for function names, which the ESB
	// Gateway's EnsureContainer follows.
	lambdaNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	// reservedEnv are the variables the agent sets in every worker.
	reservedEnv = map[string]bool{"ESB_FUNCTION": true, "ESB_WORKER_ID": true, "PORT": true}
)

// AcquireRequest is a validated-to-be acquire.
type AcquireRequest struct {
	Function    string
	Image       string
	Env         map[string]string
	Owner       string
	MemoryBytes int64
	CPUMillis   int64
	RequestID   string
	// LambdaName applies Lambda's rule to Function (the ESB Gateway's
	// EnsureContainer) instead of ours.
	LambdaName bool
}

// Validate checks every field and names the first bad one.
func (r *AcquireRequest) Validate() error {
	if r.LambdaName {
		if !lambdaNameRE.MatchString(r.Function) {
			return invalid("function", "%q must be 1 to 64 letters, digits, '-' or '_' (Lambda's rule)", truncate(r.Function))
		}
	} else if !functionRE.MatchString(r.Function) {
		return invalid("function", "%q must be 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit", truncate(r.Function))
	}
	if r.Image == "" {
		return invalid("image", "is required")
	}
	if len(r.Image) > 512 || hasControl(r.Image) {
		return invalid("image", "%q is not an image reference", truncate(r.Image))
	}
	if _, err := reference.ParseNormalizedNamed(r.Image); err != nil {
		return invalid("image", "%q is not an image reference: %v", truncate(r.Image), err)
	}
	if err := validateID("owner_id", r.Owner, true); err != nil {
		return err
	}
	if err := validateID("request_id", r.RequestID, false); err != nil {
		return err
	}
	if len(r.Env) > MaxEnvVars {
		return invalid("env", "has %d variables, at most %d", len(r.Env), MaxEnvVars)
	}
	size := 0
	for k, v := range r.Env {
		if !envKeyRE.MatchString(k) {
			return invalid("env", "key %q must be a shell variable name (letters, digits, '_'; no '=' or NUL)", truncate(k))
		}
		if strings.ContainsRune(v, 0) {
			return invalid("env", "value of %s contains a NUL byte", k)
		}
		if reservedEnv[k] {
			return invalid("env", "key %s is reserved (the agent sets ESB_FUNCTION, ESB_WORKER_ID and PORT)", k)
		}
		size += len(k) + len(v) + 2
	}
	if size > MaxEnvBytes {
		return invalid("env", "is %d bytes, at most %d", size, MaxEnvBytes)
	}
	if r.MemoryBytes != 0 && (r.MemoryBytes < MinMemoryBytes || r.MemoryBytes > MaxMemoryBytes) {
		return invalid("limits.memory_bytes", "%d must be 0 (the default) or from %d to %d", r.MemoryBytes, MinMemoryBytes, int64(MaxMemoryBytes))
	}
	if r.CPUMillis != 0 && (r.CPUMillis < MinCPUMillis || r.CPUMillis > MaxCPUMillis) {
		return invalid("limits.cpu_millis", "%d must be 0 (the default) or from %d to %d", r.CPUMillis, MinCPUMillis, MaxCPUMillis)
	}
	return nil
}

// validateID checks an owner, request or worker ID.
func validateID(field, s string, required bool) error {
	if s == "" {
		if required {
			return invalid(field, "is required")
		}
		return nil
	}
	if len(s) > MaxIDLen || hasControl(s) || strings.ContainsAny(s, " /") {
		return invalid(field, "%q must be at most %d printable characters without spaces or '/'", truncate(s), MaxIDLen)
	}
	return nil
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }) >= 0
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
