package conf

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseServices(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"", "", ""},
		{"s3-storage=9000, database=8000,victorialogs=9428", "database=8000,s3-storage=9000,victorialogs=9428", ""},
		{"S3-Storage.=9000", "s3-storage=9000", ""},
		{"svc.local=80", "svc.local=80", ""},
		{"s3-storage", "", `invalid services "s3-storage": must be name=port`},
		{"s3_storage=9000", "", `invalid services "s3_storage": invalid service name`},
		{"-s3=9000", "", `invalid services "-s3": invalid service name`},
		{"a..b=1", "", `invalid services "a..b": invalid service name`},
		{"10.88.0.1=9000", "", `invalid services "10.88.0.1": invalid service name: a service name is not an address`},
		{"localhost=9000", "", `invalid services "localhost": invalid service name: localhost names are each worker's loopback`},
		{"s3.LocalHost=9000", "", `invalid services "s3.localhost": invalid service name: localhost names`},
		{"=9000", "", `invalid services: a service name must be 1 to 253 characters`},
		{"s3=0", "", `invalid services.s3 "0": port must be from 1 to 65535`},
		{"s3=70000", "", `invalid services.s3 "70000": port must be from 1 to 65535`},
		{"s3=x", "", `invalid services.s3 "x": port must be from 1 to 65535`},
		{"s3=9000,S3=9001", "", `invalid services.s3: name clash: given twice`},
		{"db=8000,x.db=8001", "", `invalid services.x.db: name clash with db`},
	} {
		got, err := ParseServices("services", tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !IsFieldError(err) {
				t.Errorf("ParseServices(%q) = %v, %v; want a field error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseServices(%q) = %q, %v; want %q", tc.in, got.String(), err, tc.want)
		}
	}
}

func TestCheckServicesAndResolver(t *testing.T) {
	rules, err := DecodeNATRules([]byte(`{"forwards":[{"proto":"tcp","port":9000,"to":"127.0.0.1:9000"},{"proto":"udp","port":8000,"to":"127.0.0.1:8000"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ok, _ := ParseServices("services", "s3-storage=9000")
	if err := rules.CheckServices("services", ok); err != nil {
		t.Errorf("s3-storage on the tcp forward 9000: %v", err)
	}
	bad, _ := ParseServices("services", "s3-storage=9000,database=8000")
	if err := rules.CheckServices("services", bad); err == nil || !strings.Contains(err.Error(), `invalid services.database "8000": unknown port`) {
		t.Errorf("database on a udp-only port: %v, want unknown port", err)
	}
	to := netip.MustParseAddrPort("10.88.0.1:1053")
	withDNS, err := rules.WithResolver(to)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(withDNS.Forwards); n != 4 || len(rules.Forwards) != 2 {
		t.Fatalf("WithResolver: %d forwards (original now %d), want 4 (2)", n, len(rules.Forwards))
	}
	for _, f := range withDNS.Forwards[2:] {
		if f.Port != DNSPort || f.To != to {
			t.Errorf("resolver forward %+v", f)
		}
	}
	if _, err := withDNS.WithResolver(to); err == nil || !strings.Contains(err.Error(), "forwards[2].port") {
		t.Errorf("a rule set that forwards 53 already: %v, want forwards[2].port named", err)
	}
	if got := ResolvConf(rules.Gateway); got != "nameserver 10.88.0.1\noptions ndots:0 attempts:2 timeout:1\n" {
		t.Errorf("ResolvConf = %q", got)
	}
}
