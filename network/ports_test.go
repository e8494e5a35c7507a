package network

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParsePortSpec(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		spec string
		want []PortMapping
	}{
		{"8080:80", []PortMapping{{Proto: "tcp", HostPort: 8080, Port: 80}}},
		{"5353:53/udp", []PortMapping{{Proto: "udp", HostPort: 5353, Port: 53}}},
		{"127.0.0.1:9090:90/tcp", []PortMapping{{Proto: "tcp", HostIP: lo, HostPort: 9090, Port: 90}}},
		{"65535:1", []PortMapping{{Proto: "tcp", HostPort: 65535, Port: 1}}},
		{"[2001:db8::1]:8443:443", []PortMapping{{Proto: "tcp", HostIP: netip.MustParseAddr("2001:db8::1"), HostPort: 8443, Port: 443}}},
		{"[::]:53:53/udp", []PortMapping{{Proto: "udp", HostIP: netip.IPv6Unspecified(), HostPort: 53, Port: 53}}},
		{"8000-8002:80-82/udp", []PortMapping{
			{Proto: "udp", HostPort: 8000, Port: 80}, {Proto: "udp", HostPort: 8001, Port: 81}, {Proto: "udp", HostPort: 8002, Port: 82},
		}},
	} {
		got, err := ParsePortSpec(tc.spec)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParsePortSpec(%q) = %v, %v; want %v", tc.spec, got, err, tc.want)
		}
	}
	for spec, want := range map[string]string{
		"80":                 "HOSTPORT:PORT",
		"1.2.3.4:5:6:7":      "HOSTPORT:PORT",
		":80":                "host port is required",
		"127.0.0.1::80":      "host port is required",
		"0:80":               "out of range",
		"8080:65536":         "out of range",
		"8080:0/udp":         "out of range",
		"x:80":               "not a port number",
		"+80:80":             "not a port number",
		"8080:80/sctp":       "protocol",
		"8000-8010:80-81":    "differ in length",
		"8000-8010:80":       "differ in length",
		"8010-8000:80-90":    "ends before it starts",
		"::1:8080:80":        "HOSTPORT:PORT",
		"localhost:8080:80":  "not an IPv4 address",
		"[10.0.0.1]:80:80":   "not an IPv6 address in brackets",
		"[2001:db8::1:80:80": "not an IPv6 address in brackets",
		"[fe80::1%eth0]:1:1": "not an IPv6 address in brackets",
		"[::1]:80":           "HOSTPORT:PORT",
		"300.1.1.1:8080:80":  "not an IPv4 address",
		"127.0.0.1:8080:80/": "protocol",
	} {
		_, err := ParsePortSpec(spec)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), spec) {
			t.Errorf("ParsePortSpec(%q) error = %v; want it to name the spec and say %q", spec, err, want)
		}
	}
}

func TestPortOverlaps(t *testing.T) {
	any := PortMapping{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: 8080, Port: 80}
	lo := PortMapping{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8080, Port: 81}
	other := PortMapping{Proto: "tcp", HostIP: netip.MustParseAddr("10.0.0.1"), HostPort: 8080, Port: 82}
	udp := PortMapping{Proto: "udp", HostIP: netip.IPv4Unspecified(), HostPort: 8080, Port: 80}
	v6 := PortMapping{Proto: "tcp", HostIP: netip.MustParseAddr("2001:db8::1"), HostPort: 8080, Port: 83}
	any6 := PortMapping{Proto: "tcp", HostIP: netip.IPv6Unspecified(), HostPort: 8080, Port: 84}
	for _, tc := range []struct {
		a, b PortMapping
		want bool
	}{
		{any, lo, true}, {lo, any, true}, {lo, other, false}, {any, udp, false}, {lo, lo, true},
		// 0.0.0.0 is both families' wildcard (Docker publishes it on
		// both), :: only IPv6's.
		{any, v6, true}, {v6, any, true}, {any6, v6, true}, {any6, lo, false}, {lo, any6, false}, {any6, any, true},
	} {
		if got := tc.a.Overlaps(tc.b); got != tc.want {
			t.Errorf("%v overlaps %v = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
	if s := lo.String(); s != "127.0.0.1:8080->81/tcp" {
		t.Errorf("String() = %q", s)
	}
	if s := v6.String(); s != "[2001:db8::1]:8080->83/tcp" {
		t.Errorf("String() = %q", s)
	}
}
