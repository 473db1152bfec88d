package agent

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/distribution/reference"
)

func goodRequest() AcquireRequest {
	return AcquireRequest{Function: "hello", Image: "127.0.0.1:5000/esb/worker:latest", Owner: "tenant-1",
		Env: map[string]string{"A": "1", "_B2": "x=y z"}, RequestID: "req-1"}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name string
		edit func(*AcquireRequest)
	}{
		{"as is", func(*AcquireRequest) {}},
		{"function of 63", func(r *AcquireRequest) { r.Function = strings.Repeat("f", 63) }},
		{"function with . _ -", func(r *AcquireRequest) { r.Function = "my.fn_v2-beta" }},
		{"docker hub short name", func(r *AcquireRequest) { r.Image = "busybox" }},
		{"digest", func(r *AcquireRequest) {
			r.Image = "127.0.0.1:5000/esb/worker@sha256:" + strings.Repeat("a", 64)
		}},
		{"owner of 128 with : and @", func(r *AcquireRequest) { r.Owner = "arn:aws:iam::1@x" + strings.Repeat("o", 112) }},
		{"no env", func(r *AcquireRequest) { r.Env = nil }},
		{"256 env vars", func(r *AcquireRequest) {
			r.Env = map[string]string{}
			for i := range MaxEnvVars {
				r.Env["V"+strings.Repeat("x", i)] = ""
			}
		}},
		{"value with newline and unicode", func(r *AcquireRequest) { r.Env = map[string]string{"A": "line1\nline2 ü"} }},
		{"limits at the bounds", func(r *AcquireRequest) { r.MemoryBytes, r.CPUMillis = MinMemoryBytes, MaxCPUMillis }},
		{"limits at the upper bounds", func(r *AcquireRequest) { r.MemoryBytes, r.CPUMillis = MaxMemoryBytes, MinCPUMillis }},
		{"no request ID", func(r *AcquireRequest) { r.RequestID = "" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := goodRequest()
			tc.edit(&r)
			if err := r.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

// badRequest is an edit that makes a good request bad, with the field
// the error must name.
type badRequest struct {
	name  string
	edit  func(*AcquireRequest)
	field string
	want  string // a part of the message
}

var badRequests = []badRequest{
	{"no function", func(r *AcquireRequest) { r.Function = "" }, "function", `""`},
	{"function ../etc", func(r *AcquireRequest) { r.Function = "../etc" }, "function", `"../etc"`},
	{"function a/b", func(r *AcquireRequest) { r.Function = "a/b" }, "function", "a/b"},
	{"function with NUL", func(r *AcquireRequest) { r.Function = "a\x00b" }, "function", `\x00`},
	{"function of 64", func(r *AcquireRequest) { r.Function = strings.Repeat("f", 64) }, "function", "63"},
	{"function starting with -", func(r *AcquireRequest) { r.Function = "-x" }, "function", "starting with"},
	{"function of 1000 bytes, cut in the message", func(r *AcquireRequest) { r.Function = strings.Repeat("\xff\"", 500) }, "function", "..."},
	{"function with space", func(r *AcquireRequest) { r.Function = "a b" }, "function", `"a b"`},
	{"function unicode", func(r *AcquireRequest) { r.Function = "fünf" }, "function", "f"},
	{"no image", func(r *AcquireRequest) { r.Image = "" }, "image", "required"},
	{"image upper case", func(r *AcquireRequest) { r.Image = "UPPER/Case:tag" }, "image", "not an image reference"},
	{"image with NUL", func(r *AcquireRequest) { r.Image = "a\x00b" }, "image", "not an image reference"},
	{"image with spaces", func(r *AcquireRequest) { r.Image = "not an image" }, "image", "not an image reference"},
	{"image path traversal", func(r *AcquireRequest) { r.Image = "../../etc/passwd" }, "image", "not an image reference"},
	{"image bad digest", func(r *AcquireRequest) { r.Image = "x@sha256:abc" }, "image", "not an image reference"},
	{"image of 513", func(r *AcquireRequest) { r.Image = strings.Repeat("a", 513) }, "image", "..."},
	{"image with a scheme", func(r *AcquireRequest) { r.Image = "http://127.0.0.1:5000/esb/worker" }, "image", "not an image reference"},
	{"no owner", func(r *AcquireRequest) { r.Owner = "" }, "owner_id", "required"},
	{"owner a b", func(r *AcquireRequest) { r.Owner = "a b" }, "owner_id", "without spaces"},
	{"owner a/b", func(r *AcquireRequest) { r.Owner = "a/b" }, "owner_id", "'/'"},
	{"owner with newline", func(r *AcquireRequest) { r.Owner = "a\nb" }, "owner_id", `\n`},
	{"owner with NUL", func(r *AcquireRequest) { r.Owner = "a\x00" }, "owner_id", `\x00`},
	{"owner invalid UTF-8", func(r *AcquireRequest) { r.Owner = "a\xff" }, "owner_id", "printable"},
	{"owner of 129", func(r *AcquireRequest) { r.Owner = strings.Repeat("o", 129) }, "owner_id", "128"},
	{"request ID x/y", func(r *AcquireRequest) { r.RequestID = "x/y" }, "request_id", "x/y"},
	{"request ID of 129", func(r *AcquireRequest) { r.RequestID = strings.Repeat("r", 129) }, "request_id", "128"},
	{"env key A=B", func(r *AcquireRequest) { r.Env = map[string]string{"A=B": "1"} }, "env", `"A=B"`},
	{"env key with NUL", func(r *AcquireRequest) { r.Env = map[string]string{"A\x00B": "1"} }, "env", `\x00`},
	{"env key empty", func(r *AcquireRequest) { r.Env = map[string]string{"": "1"} }, "env", `""`},
	{"env key starting with digit", func(r *AcquireRequest) { r.Env = map[string]string{"1A": "1"} }, "env", `"1A"`},
	{"env key with -", func(r *AcquireRequest) { r.Env = map[string]string{"A-B": "1"} }, "env", `"A-B"`},
	{"env key of 257", func(r *AcquireRequest) { r.Env = map[string]string{strings.Repeat("K", 257): "1"} }, "env", "..."},
	{"env value with NUL", func(r *AcquireRequest) { r.Env = map[string]string{"A": "x\x00y"} }, "env", "NUL"},
	{"env ESB_WORKER_ID", func(r *AcquireRequest) { r.Env = map[string]string{"ESB_WORKER_ID": "x"} }, "env", "reserved"},
	{"env too large", func(r *AcquireRequest) { r.Env = map[string]string{"A": strings.Repeat("v", MaxEnvBytes)} }, "env", "bytes"},
	{"257 env vars", func(r *AcquireRequest) {
		r.Env = map[string]string{}
		for i := range MaxEnvVars + 1 {
			r.Env["V"+strings.Repeat("x", i)] = ""
		}
	}, "env", "257"},
	{"memory 1", func(r *AcquireRequest) { r.MemoryBytes = 1 }, "limits.memory_bytes", "1 must be"},
	{"memory negative", func(r *AcquireRequest) { r.MemoryBytes = -1 }, "limits.memory_bytes", "-1"},
	{"memory 64 GiB + 1", func(r *AcquireRequest) { r.MemoryBytes = MaxMemoryBytes + 1 }, "limits.memory_bytes", "68719476737"},
	{"cpu 1", func(r *AcquireRequest) { r.CPUMillis = 1 }, "limits.cpu_millis", "1 must be"},
	{"cpu negative", func(r *AcquireRequest) { r.CPUMillis = -1000 }, "limits.cpu_millis", "-1000"},
	{"cpu 2^40", func(r *AcquireRequest) { r.CPUMillis = 1 << 40 }, "limits.cpu_millis", "1099511627776"},
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range badRequests {
		t.Run(tc.name, func(t *testing.T) {
			r := goodRequest()
			tc.edit(&r)
			err := r.Validate()
			var e *Error
			if !errors.As(err, &e) || e.Code != Invalid || e.Field != tc.field {
				t.Fatalf("Validate = %v, want Invalid naming %s", err, tc.field)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "invalid "+tc.field+": ") || !strings.Contains(msg, tc.want) {
				t.Errorf("message %q does not start with %q or lacks %q", msg, "invalid "+tc.field+": ", tc.want)
			}
			if !utf8.ValidString(msg) || len(msg) > 400 {
				t.Errorf("message is not short valid UTF-8 (%d bytes): %q", len(msg), msg)
			}
		})
	}
}

func TestValidateID(t *testing.T) {
	for _, ok := range []string{"0123456789abcdef", "a", "tenant:42", strings.Repeat("x", MaxIDLen)} {
		if err := validateID("worker_id", ok, true); err != nil {
			t.Errorf("validateID(%q): %v", ok, err)
		}
	}
	if err := validateID("request_id", "", false); err != nil {
		t.Errorf("optional empty ID: %v", err)
	}
	for _, bad := range []string{"", "../x", "a b", "a\tb", "\x00", "\x7f", "\xff", strings.Repeat("x", MaxIDLen+1)} {
		err := validateID("worker_id", bad, true)
		var e *Error
		if !errors.As(err, &e) || e.Code != Invalid || e.Field != "worker_id" {
			t.Errorf("validateID(%q) = %v, want Invalid naming worker_id", bad, err)
		}
	}
}

// FuzzValidate drives AcquireRequest.Validate with arbitrary fields: it
// never panics; a refusal is Invalid, names one of the request's fields and
// is a short, valid UTF-8 message; an accepted request holds nothing that
// could break the container spec (env entries split back into the same key
// and value, no NUL, IDs without '/' or control characters, a parseable
// image, limits in range).
func FuzzValidate(f *testing.F) {
	f.Add("hello", "127.0.0.1:5000/esb/worker:latest", "A", "1", "tenant", "req", int64(0), int64(0))
	f.Add("../x", "busybox", "A=B", "", "a/b", "", int64(1), int64(1))
	f.Add("f", "UPPER:tag", "ESB_X", "x\x00", "a b", "x/y", int64(-1), int64(1<<40))
	f.Add("f.g_h-i", "x@sha256:"+strings.Repeat("0", 64), "_", "\xff", "\xff", "\n", int64(MinMemoryBytes), int64(MaxCPUMillis))
	f.Add("a", "a:b:c", "K\x00", "v", "o", "", int64(MaxMemoryBytes+1), int64(MinCPUMillis-1))
	fields := map[string]bool{"function": true, "image": true, "env": true, "owner_id": true, "request_id": true,
		"limits.memory_bytes": true, "limits.cpu_millis": true}
	f.Fuzz(func(t *testing.T, function, image, key, value, owner, request string, mem, cpu int64) {
		r := AcquireRequest{Function: function, Image: image, Env: map[string]string{key: value}, Owner: owner,
			RequestID: request, MemoryBytes: mem, CPUMillis: cpu}
		err := r.Validate()
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != Invalid || !fields[e.Field] {
				t.Fatalf("refusal %v is not Invalid naming a request field", err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "invalid "+e.Field+": ") || !utf8.ValidString(msg) || len(msg) > 1024 {
				t.Fatalf("bad message %q", msg)
			}
			return
		}
		for k0, v0 := range r.Env {
			kv := k0 + "=" + v0 // as the runtimes write the OCI env
			k, v, _ := strings.Cut(kv, "=")
			if k != key || v != value || strings.ContainsRune(kv, 0) || reservedEnv[k] {
				t.Fatalf("env %q=%q renders as %q", key, value, kv)
			}
		}
		for _, id := range []string{owner, request, function} {
			if strings.ContainsAny(id, "/ \x00\n") || !utf8.ValidString(id) {
				t.Fatalf("accepted ID %q", id)
			}
		}
		if _, err := reference.ParseNormalizedNamed(image); err != nil {
			t.Fatalf("accepted image %q: %v", image, err)
		}
		if (mem != 0 && (mem < MinMemoryBytes || mem > MaxMemoryBytes)) || (cpu != 0 && (cpu < MinCPUMillis || cpu > MaxCPUMillis)) {
			t.Fatalf("accepted limits %d, %d", mem, cpu)
		}
	})
}
