package server

import (
	"net/netip"
	"testing"
)

// A drop's addresses carry ports only where the protocol has them.
func TestHostPort(t *testing.T) {
	for _, tc := range []struct {
		proto string
		a     netip.AddrPort
		want  string
	}{
		{"tcp", netip.MustParseAddrPort("10.0.0.2:80"), "10.0.0.2:80"},
		{"udp", netip.MustParseAddrPort("[fd00::3]:53"), "[fd00::3]:53"},
		{"icmp", netip.MustParseAddrPort("10.0.0.2:4660"), "10.0.0.2"},
		{"arp", netip.MustParseAddrPort("0.0.0.0:0"), "0.0.0.0"},
		{"ethertype 0x88cc", netip.AddrPort{}, ""},
	} {
		if got := hostPort(tc.proto, tc.a); got != tc.want {
			t.Errorf("%s %v: %q, want %q", tc.proto, tc.a, got, tc.want)
		}
	}
}
