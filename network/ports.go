package network

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// PortMapping is one published port: connections to HostIP:HostPort (any
// host address when HostIP is 0.0.0.0, of both families on a dual-stack
// network; any IPv6 one when it is ::) are forwarded to the endpoint's
// address (of the connection's family) at Port.
type PortMapping struct {
	Proto    string     `json:"proto"` // "tcp" or "udp"
	HostIP   netip.Addr `json:"host_ip"`
	HostPort uint16     `json:"host_port"`
	Port     uint16     `json:"port"`
}

// String prints the mapping as `docker ps` does: 0.0.0.0:8080->80/tcp.
func (p PortMapping) String() string {
	return fmt.Sprintf("%s->%d/%s", netip.AddrPortFrom(p.HostIP, p.HostPort), p.Port, p.Proto)
}

// Overlaps reports whether two mappings claim the same host socket: same
// protocol and port, and the same host IP or either one a wildcard that
// covers the other (0.0.0.0 covers both families, :: IPv6).
func (p PortMapping) Overlaps(o PortMapping) bool {
	covers := func(w, a netip.Addr) bool {
		return w == netip.IPv4Unspecified() || (w == netip.IPv6Unspecified() && a.Is6())
	}
	return p.Proto == o.Proto && p.HostPort == o.HostPort &&
		(p.HostIP == o.HostIP || covers(p.HostIP, o.HostIP) || covers(o.HostIP, p.HostIP))
}

// ParsePortSpec parses one -p value, [HOSTIP:]HOSTPORT:PORT[/tcp|udp], where
// both ports may be ranges of the same length (8000-8010:80-90), into one
// mapping per port. An IPv6 host IP is in brackets ([2001:db8::1]:80:80),
// as Docker writes it. An empty host IP stays invalid (the network's
// host_binding_ipv4 applies).
func ParsePortSpec(spec string) ([]PortMapping, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("invalid port mapping %q: %s", spec, fmt.Sprintf(format, a...))
	}
	rest, proto := spec, "tcp"
	if i := strings.LastIndexByte(spec, '/'); i >= 0 {
		rest, proto = spec[:i], spec[i+1:]
		if proto != "tcp" && proto != "udp" {
			return nil, bad("protocol %q: want tcp or udp", proto)
		}
	}
	var hostIP netip.Addr
	if strings.HasPrefix(rest, "[") {
		addr, ports, ok := strings.Cut(rest[1:], "]:")
		a, err := netip.ParseAddr(addr)
		if !ok || err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return nil, bad("host IP %q is not an IPv6 address in brackets", rest)
		}
		hostIP, rest = a, ports
	}
	parts := strings.Split(rest, ":")
	switch {
	case len(parts) == 2:
	case len(parts) == 3 && !hostIP.IsValid():
		a, err := netip.ParseAddr(parts[0])
		if err != nil || !a.Is4() {
			return nil, bad("host IP %q is not an IPv4 address (an IPv6 one goes in brackets)", parts[0])
		}
		hostIP, parts = a, parts[1:]
	default:
		return nil, bad("want [HOSTIP:]HOSTPORT:PORT[/tcp|udp]")
	}
	if parts[0] == "" {
		return nil, bad("a host port is required (bpfnet does not pick one)")
	}
	hFirst, hLast, err := parsePortRange(parts[0])
	if err != nil {
		return nil, bad("host port: %v", err)
	}
	cFirst, cLast, err := parsePortRange(parts[1])
	if err != nil {
		return nil, bad("container port: %v", err)
	}
	if hLast-hFirst != cLast-cFirst {
		return nil, bad("host range %d-%d and container range %d-%d differ in length", hFirst, hLast, cFirst, cLast)
	}
	var out []PortMapping
	for i := 0; i <= hLast-hFirst; i++ {
		out = append(out, PortMapping{Proto: proto, HostIP: hostIP, HostPort: uint16(hFirst + i), Port: uint16(cFirst + i)})
	}
	return out, nil
}

// parsePortRange parses "80" or "80-90".
func parsePortRange(s string) (first, last int, err error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if first, err = parsePort(lo); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return first, first, nil
	}
	if last, err = parsePort(hi); err != nil {
		return 0, 0, err
	}
	if last < first {
		return 0, 0, fmt.Errorf("range %s ends before it starts", s)
	}
	return first, last, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if p < 1 || p > 65535 {
		return 0, fmt.Errorf("%d is out of range 1-65535", p)
	}
	return p, nil
}

// PortRequest is a port to publish as Docker's engine asks for one: a
// HostPort of 0 is any free port of DynamicPorts, and a range
// HostPort-HostPortEnd is its first free port (`-p 8000-8010:80`).
type PortRequest struct {
	Proto       string     // "tcp" or "udp"
	HostIP      netip.Addr // invalid: the network's host_binding_ipv4
	HostPort    uint16
	HostPortEnd uint16 // 0: HostPort only
	Port        uint16
}

// DynamicPorts are the host ports a request for "any port" gets, as
// Docker's port allocator hands them out.
var DynamicPorts = [2]uint16{49153, 65535}

// candidates are the host ports a request may get, in order.
func (r PortRequest) candidates() (lo, hi uint16) {
	switch {
	case r.HostPort == 0:
		return DynamicPorts[0], DynamicPorts[1]
	case r.HostPortEnd > r.HostPort:
		return r.HostPort, r.HostPortEnd
	}
	return r.HostPort, r.HostPort
}
