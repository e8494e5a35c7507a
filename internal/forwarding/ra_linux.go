package forwarding

import (
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/internal/netlinksafe"
	"github.com/bpfnet/bpfnet/internal/sysctl"
)

// RouterAdvertised lists the interfaces whose IPv6 default route was
// learnt from a router advertisement and whose accept_ra is 1: with IPv6
// forwarding on, they take no further advertisement, so that route will
// expire unless accept_ra becomes 2. It is the administrator's setting,
// so bpfnet only says so.
func RouterAdvertised() []string {
	routes, err := netlinksafe.RouteList(nil, netlink.FAMILY_V6)
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range routes {
		if !netlinksafe.IsDefaultRoute(r) || r.Protocol != unix.RTPROT_RA {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		name := l.Attrs().Name
		if v, err := sysctl.Read(sysctl.Root, "net/ipv6/conf/"+name+"/accept_ra"); err == nil && v == "1" && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}
