package conf

import (
	"strings"
	"testing"
)

// FuzzParseIPAMNetConf checks that any input either parses into a config
// whose ranges are sane or fails with a decode or field error; it must never
// panic. The seeds run in every normal test run.
func FuzzParseIPAMNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"esb","ipam":{"type":"esb-ipam"}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.20"}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","ipv6":{"subnet":"fd00::/120","rangeEnd":"fd00::ff"}}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","routes":[{"dst":"0.0.0.0/0","gw":"10.88.0.1"}]}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","subnet":"10.88.0.0/33"}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","lockWait":"1h"}}`,
		`{"name":`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := ParseIPAMNetConf(data)
		if err != nil {
			if !IsDecodeError(err) && !IsFieldError(err) {
				t.Fatalf("error of unexpected kind %T: %v", err, err)
			}
			if IsFieldError(err) && !strings.HasPrefix(err.Error(), "invalid ") {
				t.Fatalf("field error does not say what is invalid: %v", err)
			}
			return
		}
		for _, r := range nc.IPAM.Ranges() {
			if !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || r.Start.Compare(r.End) > 0 || !r.Subnet.Contains(r.Gateway) {
				t.Fatalf("accepted an inconsistent range %+v", r)
			}
			if r.Start == r.End && r.Start == r.Gateway {
				t.Fatalf("accepted a range that holds only the gateway: %+v", r)
			}
		}
	})
}
