package conf

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// RangeConfig is one address range as written in the "ipam" object.
type RangeConfig struct {
	Subnet     string `json:"subnet,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
}

// RouteConfig is one route as written in the "ipam" object. A route without
// gw is reached through the attachment's gateway.
type RouteConfig struct {
	Dst string `json:"dst"`
	GW  string `json:"gw,omitempty"`
}

// IPAMConfig is the "ipam" object of a network configuration, as written.
// The top-level range is IPv4 and required; IPv6 adds a second range that is
// allocated in the same transaction (dual stack).
type IPAMConfig struct {
	Type       string        `json:"type"`
	Subnet     string        `json:"subnet,omitempty"`
	Gateway    string        `json:"gateway,omitempty"`
	RangeStart string        `json:"rangeStart,omitempty"`
	RangeEnd   string        `json:"rangeEnd,omitempty"`
	IPv6       *RangeConfig  `json:"ipv6,omitempty"`
	Routes     []RouteConfig `json:"routes,omitempty"`
	DataDir    string        `json:"dataDir,omitempty"`
	// LockWait bounds the wait for the store's lock; past it ADD fails with
	// CNI error 11 (try again later).
	LockWait string `json:"lockWait,omitempty"`
	// GCGrace keeps allocations younger than this through GC.
	GCGrace string `json:"gcGrace,omitempty"`
}

// Range is a validated address range. Start..End excludes the subnet's
// network address and, for IPv4, its broadcast address; Gateway is never
// handed out even when it lies inside Start..End.
type Range struct {
	Subnet  netip.Prefix
	Gateway netip.Addr
	Start   netip.Addr
	End     netip.Addr
}

// Contains reports whether a lies in Start..End.
func (r Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.Start.BitLen() && r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

// Reserved reports whether a is never handed out: the network address, the
// gateway or (IPv4) the broadcast address.
func (r Range) Reserved(a netip.Addr) bool {
	if a == r.Gateway || a == r.Subnet.Addr() {
		return true
	}
	return a.Is4() && a == LastAddr(r.Subnet)
}

// Size returns how many addresses the range can hand out: Start..End less
// the reserved addresses inside it, saturated at the largest uint64.
func (r Range) Size() uint64 {
	a, b := r.Start.As16(), r.End.As16()
	if [8]byte(a[:8]) != [8]byte(b[:8]) {
		return math.MaxUint64
	}
	n := binary.BigEndian.Uint64(b[8:]) - binary.BigEndian.Uint64(a[8:])
	if n == math.MaxUint64 {
		return n
	}
	n++
	for _, x := range []netip.Addr{r.Subnet.Addr(), r.Gateway, LastAddr(r.Subnet)} {
		if r.Reserved(x) && r.Contains(x) {
			n--
		}
	}
	return n
}

// String renders the range as "start-end".
func (r Range) String() string { return r.Start.String() + "-" + r.End.String() }

// Route is a validated route. GW is the zero Addr when the route goes
// through the attachment's gateway.
type Route struct {
	Dst netip.Prefix
	GW  netip.Addr
}

// IPAM is the validated IPAM configuration of one network.
type IPAM struct {
	Network  string
	V4       Range
	V6       *Range
	Routes   []Route
	DataDir  string
	LockWait time.Duration
	GCGrace  time.Duration
}

// Ranges returns the configured ranges, IPv4 first.
func (c *IPAM) Ranges() []Range {
	if c.V6 == nil {
		return []Range{c.V4}
	}
	return []Range{c.V4, *c.V6}
}

// IPAMNetConf is a network configuration as an IPAM plugin receives it.
type IPAMNetConf struct {
	CNIVersion       string
	Name             string
	IPAM             *IPAM
	ValidAttachments []types.GCAttachment
	// Raw is the input, kept for version-aware parsing of prevResult.
	Raw []byte
}

type ipamEnvelope struct {
	CNIVersion       string               `json:"cniVersion"`
	Name             string               `json:"name"`
	IPAM             *IPAMConfig          `json:"ipam"`
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
}

// DefaultIPAMConfig returns the "ipam" object of the default esb network.
func DefaultIPAMConfig() IPAMConfig {
	return IPAMConfig{
		Type:    IPAMType,
		Subnet:  DefaultSubnet,
		Gateway: DefaultGateway,
		Routes:  []RouteConfig{{Dst: "0.0.0.0/0"}},
		DataDir: DefaultDataDir,
	}
}

// ParseIPAMNetConf decodes and validates a network configuration whose
// "ipam" object is for esb-ipam. Unset fields take the esb defaults. Errors
// are *DecodeError for malformed JSON and *FieldError for bad values.
func ParseIPAMNetConf(data []byte) (*IPAMNetConf, error) {
	env := ipamEnvelope{IPAM: &IPAMConfig{}}
	if err := decode(data, &env); err != nil {
		return nil, err
	}
	if env.IPAM == nil { // "ipam": null
		return nil, fieldErr("ipam", "", "is required, for example {\"type\": %q}", IPAMType)
	}
	if err := ValidateNetworkName("name", env.Name); err != nil {
		return nil, err
	}
	ipam, err := env.IPAM.Validate(env.Name, "ipam")
	if err != nil {
		return nil, err
	}
	return &IPAMNetConf{
		CNIVersion:       env.CNIVersion,
		Name:             env.Name,
		IPAM:             ipam,
		ValidAttachments: env.ValidAttachments,
		Raw:              data,
	}, nil
}

// decode unmarshals data into v, turning type mismatches into a
// *FieldError that names the JSON path of the field.
func decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fieldErr(te.Field, "", "must be a JSON %s, not %s", jsonKind(te.Type.Kind().String()), te.Value)
		}
		return &DecodeError{Err: err}
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "struct", "map", "ptr":
		return "object"
	default:
		return "number"
	}
}

// networkNamePattern is what a network name must match (a regexp, for
// messages; validNetworkName checks it without compiling one at init in
// every plugin process).
const networkNamePattern = `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`

func validNetworkName(name string) bool {
	for i, r := range name {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '_' && r != '.' && r != '-') {
			return false
		}
	}
	return name != ""
}

// ValidateNetworkName checks a CNI network name; it becomes a file name.
func ValidateNetworkName(field, name string) error {
	if name == "" {
		return fieldErr(field, "", "is required")
	}
	if len(name) > 128 || !validNetworkName(name) {
		return fieldErr(field, name, "must match %s and be at most 128 characters", networkNamePattern)
	}
	return nil
}

// Validate checks the IPAM object and fills in defaults. prefix is the JSON
// path of the object, used in error messages.
func (c *IPAMConfig) Validate(network, prefix string) (*IPAM, error) {
	out := &IPAM{Network: network}
	if c.Type == "" {
		return nil, fieldErr(prefix+".type", "", "is required")
	}
	subnet := c.Subnet
	if subnet == "" {
		subnet = DefaultSubnet
	}
	v4, err := parseRange(prefix, RangeConfig{subnet, c.Gateway, c.RangeStart, c.RangeEnd}, false)
	if err != nil {
		return nil, err
	}
	out.V4 = v4
	if c.IPv6 != nil {
		v6, err := parseRange(prefix+".ipv6", *c.IPv6, true)
		if err != nil {
			return nil, err
		}
		out.V6 = &v6
	}
	for i, rc := range c.Routes {
		r, err := parseRoute(fmt.Sprintf("%s.routes[%d]", prefix, i), rc)
		if err != nil {
			return nil, err
		}
		out.Routes = append(out.Routes, r)
	}
	out.DataDir = c.DataDir
	if out.DataDir == "" {
		out.DataDir = DefaultDataDir
	}
	if !filepath.IsAbs(out.DataDir) || filepath.Clean(out.DataDir) != out.DataDir {
		return nil, fieldErr(prefix+".dataDir", c.DataDir, "must be a clean absolute path")
	}
	if out.LockWait, err = parseDuration(prefix+".lockWait", c.LockWait, DefaultLockWait, time.Millisecond, 10*time.Minute); err != nil {
		return nil, err
	}
	if out.GCGrace, err = parseDuration(prefix+".gcGrace", c.GCGrace, DefaultGCGrace, 0, 24*time.Hour); err != nil {
		return nil, err
	}
	return out, nil
}

func parseDuration(field, s, def string, lo, hi time.Duration) (time.Duration, error) {
	if s == "" {
		s = def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < lo || d > hi {
		return 0, fieldErr(field, s, "must be a duration such as \"5s\" from %s to %s", lo, hi)
	}
	return d, nil
}

func parseRange(prefix string, rc RangeConfig, v6 bool) (Range, error) {
	var r Range
	family, minBits, maxBits := "IPv4", 8, 30
	if v6 {
		family, minBits, maxBits = "IPv6", 16, 126
	}
	if rc.Subnet == "" {
		return r, fieldErr(prefix+".subnet", "", "is required")
	}
	p, err := netip.ParsePrefix(rc.Subnet)
	if err != nil || p.Addr().Is4() == v6 || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return r, fieldErr(prefix+".subnet", rc.Subnet, "must be an %s CIDR such as %q", family, example(v6, "subnet"))
	}
	if p.Bits() < minBits || p.Bits() > maxBits {
		return r, fieldErr(prefix+".subnet", rc.Subnet, "prefix length must be from /%d to /%d", minBits, maxBits)
	}
	if p.Masked() != p {
		return r, fieldErr(prefix+".subnet", rc.Subnet, "has host bits set; the network is %s", p.Masked())
	}
	r.Subnet = p
	first, last := p.Addr().Next(), LastAddr(p)
	if !v6 {
		last = last.Prev()
	}
	inside := func(field, s string) (netip.Addr, error) {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Is4() == v6 || a.Zone() != "" || a.Is4In6() {
			return a, fieldErr(field, s, "must be an %s address such as %q", family, example(v6, "addr"))
		}
		if a.Compare(first) < 0 || a.Compare(last) > 0 {
			return a, fieldErr(field, s, "must lie in subnet %s from %s to %s (network and broadcast addresses excluded)", p, first, last)
		}
		return a, nil
	}
	r.Gateway = first
	if rc.Gateway != "" {
		if r.Gateway, err = inside(prefix+".gateway", rc.Gateway); err != nil {
			return r, err
		}
	}
	r.Start, r.End = first, last
	if rc.RangeStart != "" {
		if r.Start, err = inside(prefix+".rangeStart", rc.RangeStart); err != nil {
			return r, err
		}
	}
	if rc.RangeEnd != "" {
		if r.End, err = inside(prefix+".rangeEnd", rc.RangeEnd); err != nil {
			return r, err
		}
	}
	if r.Start.Compare(r.End) > 0 {
		return r, fieldErr(prefix+".rangeEnd", r.End.String(), "must not be before rangeStart %s", r.Start)
	}
	if r.Start == r.End && r.Start == r.Gateway {
		return r, fieldErr(prefix+".rangeEnd", r.End.String(), "range %s holds no address besides the gateway", r)
	}
	return r, nil
}

func parseRoute(field string, rc RouteConfig) (Route, error) {
	var r Route
	p, err := netip.ParsePrefix(rc.Dst)
	if err != nil || p.Addr().Zone() != "" {
		return r, fieldErr(field+".dst", rc.Dst, "must be a CIDR such as \"0.0.0.0/0\"")
	}
	if p.Masked() != p {
		return r, fieldErr(field+".dst", rc.Dst, "has host bits set; the network is %s", p.Masked())
	}
	r.Dst = p
	if rc.GW != "" {
		gw, err := netip.ParseAddr(rc.GW)
		if err != nil || gw.Zone() != "" {
			return r, fieldErr(field+".gw", rc.GW, "must be an IP address")
		}
		if gw.Is4() != p.Addr().Is4() {
			return r, fieldErr(field+".gw", rc.GW, "must be of the same family as dst %s", p)
		}
		r.GW = gw
	}
	return r, nil
}

func example(v6 bool, what string) string {
	switch {
	case v6 && what == "subnet":
		return "fd00:88::/64"
	case v6:
		return "fd00:88::1"
	case what == "subnet":
		return DefaultSubnet
	default:
		return DefaultGateway
	}
}

// LastAddr returns the highest address of p (the broadcast address of an
// IPv4 subnet).
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
