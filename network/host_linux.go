package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/netlinksafe"
	"github.com/bpfnet/bpfnet/internal/sysctl"
)

// aliasPrefix marks interfaces bpfnet created, in their IFLA_IFALIAS:
// "bpfnet/net/<network id>" on bridges and "bpfnet/ep/<endpoint id>" on
// host-side veths. Reconcile and --cleanup only ever delete marked links,
// so interfaces of other software are never touched.
const aliasPrefix = "bpfnet/"

// NetlinkHost implements Host with netlink in the daemon's own namespace.
type NetlinkHost struct{}

// Routes lists the IPv4 route destinations of the main table, except
// default routes: they cover every pool but make none unusable.
func (NetlinkHost) Routes() ([]netip.Prefix, error) {
	routes, err := netlinksafe.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if netlinksafe.IsDefaultRoute(r) {
			continue
		}
		if p, ok := prefixFromIPNet(r.Dst); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// LinkInUse reports whether name exists and is not one of ours.
func (NetlinkHost) LinkInUse(name string) (bool, error) {
	l, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up %s: %w", name, err)
	}
	return !strings.HasPrefix(l.Attrs().Alias, aliasPrefix), nil
}

// EnsureBridge creates or adopts the bridge of n.
func (NetlinkHost) EnsureBridge(n *Network) (err error) {
	alias := aliasPrefix + "net/" + n.ID
	l, err := netlink.LinkByName(n.Bridge)
	switch {
	case isNotFound(err):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.Bridge, MTU: n.MTU, Alias: alias}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("create bridge %s: %w", n.Bridge, err)
		}
		defer func() {
			if err != nil {
				err = errors.Join(err, netlink.LinkDel(br))
			}
		}()
		if l, err = netlink.LinkByName(n.Bridge); err != nil {
			return fmt.Errorf("look up bridge %s: %w", n.Bridge, err)
		}
		// LinkAdd ignores the alias; set it explicitly.
		if err = netlink.LinkSetAlias(l, alias); err != nil {
			return fmt.Errorf("mark bridge %s: %w", n.Bridge, err)
		}
	case err != nil:
		return fmt.Errorf("look up bridge %s: %w", n.Bridge, err)
	case l.Attrs().Alias != alias:
		return fmt.Errorf("bridge name %s is already used by another interface", n.Bridge)
	}
	if l.Attrs().MTU != n.MTU {
		if err = netlink.LinkSetMTU(l, n.MTU); err != nil {
			return fmt.Errorf("set mtu of %s: %w", n.Bridge, err)
		}
	}
	gw := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(n.Gateway, n.Subnet.Bits()))}
	if err = netlink.AddrReplace(l, gw); err != nil {
		return fmt.Errorf("add gateway %s to %s: %w", n.Gateway, n.Bridge, err)
	}
	if err = bridgeIPv6(n, l); err != nil {
		return err
	}
	if err = netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", n.Bridge, err)
	}
	return nil
}

// bridgeIPv6 sets the bridge's IPv6 side. An IPv4-only network's bridge
// has IPv6 off: with it on, the host would take a container's router
// advertisement on the bridge (a default route, an address), as later
// Docker versions stopped doing. A dual-stack bridge has IPv6 on, takes no
// router advertisement either (accept_ra=0), and holds the IPv6 gateway,
// usable at once (no duplicate address detection: the subnet is the
// network's own). The bridge is ours, so deleting it undoes all of this.
func bridgeIPv6(n *Network, l netlink.Link) error {
	conf := "net/ipv6/conf/" + n.Bridge + "/"
	if _, err := os.Stat(filepath.Join(sysctl.Root, conf)); err != nil {
		if n.DualStack() {
			return fmt.Errorf("network %s is dual-stack, but the host has no IPv6 on %s: %w", n.Name, n.Bridge, err)
		}
		return nil // a host without IPv6 at all
	}
	if !n.DualStack() {
		return sysctl.Write(sysctl.Root, conf+"disable_ipv6", "1")
	}
	for _, w := range [][2]string{{"accept_ra", "0"}, {"disable_ipv6", "0"}} {
		if err := sysctl.Write(sysctl.Root, conf+w[0], w[1]); err != nil {
			return err
		}
	}
	gw := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(n.Gateway6, n.Subnet6.Bits())), Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrReplace(l, gw); err != nil {
		return fmt.Errorf("add gateway %s to %s: %w", n.Gateway6, n.Bridge, err)
	}
	return nil
}

// DeleteBridge deletes n's bridge if it exists and is ours.
func (h NetlinkHost) DeleteBridge(n *Network) error {
	return h.deleteOwned(n.Bridge, aliasPrefix+"net/"+n.ID)
}

func (NetlinkHost) deleteOwned(name, alias string) error {
	l, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if l.Attrs().Alias != alias {
		return nil // not ours (any more): leave it alone
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// randomVethName returns "veth" + 7 hex characters, Docker's host-side
// naming, which fits IFNAMSIZ.
func randomVethName() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "veth" + hex.EncodeToString(b)[:7]
}

// CreateEndpoint creates ep's veth pair and configures the container side.
// EndpointUp implements Host.
func (NetlinkHost) EndpointUp(ep *Endpoint) error {
	l, err := netlink.LinkByName(ep.HostIf)
	if err != nil {
		return fmt.Errorf("look up %s: %w", ep.HostIf, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", ep.HostIf, err)
	}
	return nil
}

// EndpointDown implements Host.
func (NetlinkHost) EndpointDown(ep *Endpoint) error {
	l, err := netlink.LinkByName(ep.HostIf)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", ep.HostIf, err)
	}
	if err := netlink.LinkSetDown(l); err != nil {
		return fmt.Errorf("set %s down: %w", ep.HostIf, err)
	}
	return nil
}

func (h NetlinkHost) CreateEndpoint(n *Network, ep *Endpoint) (err error) {
	if ep.HandedOff() {
		return h.createHandOff(n, ep)
	}
	nsh, err := netns.GetFromPath(ep.NetNS)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", ep.NetNS, err)
	}
	defer nsh.Close()
	in, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", ep.NetNS, err)
	}
	defer in.Close()
	if _, err := in.LinkByName(ep.IfName); err == nil {
		return fmt.Errorf("interface %s already exists in netns %s", ep.IfName, ep.NetNS)
	}
	// The peer is created directly inside the container's namespace under
	// its final name, so a failure never leaves a stray interface on the
	// host and a name clash in the container is reported by the kernel.
	veth, err := addVeth(n, ep, netlink.NsFd(int(nsh)))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, netlink.LinkDel(veth))
		}
	}()
	mac := veth.PeerHardwareAddr
	peer, err := in.LinkByName(ep.IfName)
	if err != nil {
		return fmt.Errorf("look up %s in %s: %w", ep.IfName, ep.NetNS, err)
	}
	if err = in.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(ep.Prefix(n))}); err != nil {
		return fmt.Errorf("add %s to %s: %w", ep.IP, ep.IfName, err)
	}
	// The container's IPv6 is configured here, never learnt: its interface
	// takes no router advertisement, which a neighbour could send to
	// reroute it (CVE-2020-13401; Docker turns them off too), whether its
	// network has IPv6 or only link-local addresses.
	if err = inNetNS(nsh, func() error {
		name := "net/ipv6/conf/" + ep.IfName + "/accept_ra"
		if _, err := os.Stat(filepath.Join(sysctl.Root, name)); err != nil {
			return nil // IPv6 is off in the namespace
		}
		return sysctl.Write(sysctl.Root, name, "0")
	}); err != nil {
		return fmt.Errorf("turn router advertisements off on %s: %w", ep.IfName, err)
	}
	if ep.IP6.IsValid() {
		// Its address needs no duplicate detection: bpfnet gave it out.
		if err = in.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(ep.Prefix6(n)), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("add %s to %s: %w", ep.IP6, ep.IfName, err)
		}
	}
	if err = in.LinkSetUp(peer); err != nil {
		return fmt.Errorf("set %s up: %w", ep.IfName, err)
	}
	if lo, err := in.LinkByName("lo"); err == nil {
		if err := in.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
	}
	ep.MAC = mac.String()
	// Like Docker: the first interface of a namespace gets the default route
	// through its network's gateway; later ones only their connected route.
	routes, err := netlinksafe.RouteListFiltered(in, netlink.FAMILY_V4, &netlink.Route{Dst: nil}, netlink.RT_FILTER_DST)
	if err != nil {
		return fmt.Errorf("list routes in %s: %w", ep.NetNS, err)
	}
	ep.DefaultRoute = false
	if len(routes) == 0 {
		def := &netlink.Route{LinkIndex: peer.Attrs().Index, Gw: n.Gateway.AsSlice()}
		if err = in.RouteAdd(def); err != nil {
			return fmt.Errorf("add default route via %s in %s: %w", n.Gateway, ep.NetNS, err)
		}
		ep.DefaultRoute = true
		// As Docker's gateway endpoint, it holds the IPv6 default route
		// too when its network has IPv6.
		if ep.IP6.IsValid() {
			def6 := &netlink.Route{LinkIndex: peer.Attrs().Index, Gw: n.Gateway6.AsSlice()}
			if err = in.RouteAdd(def6); err != nil {
				return fmt.Errorf("add default route via %s in %s: %w", n.Gateway6, ep.NetNS, err)
			}
		}
	}
	return nil
}

// inNetNS runs f on a thread in the namespace nsh (for what netlink
// cannot do from outside: a sysctl). If the thread cannot return to its
// namespace, it stays locked and Go discards it.
func inNetNS(nsh netns.NsHandle, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(nsh); err != nil {
			done <- err
			return
		}
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// attachHostSide marks an endpoint's host-side veth as ours and makes it a
// port of the network's bridge. It stays down (no carrier for the
// container) until the policy is in place: EndpointUp.
func attachHostSide(n *Network, ep *Endpoint, br netlink.Link) error {
	host, err := netlink.LinkByName(ep.HostIf)
	if err != nil {
		return fmt.Errorf("look up %s: %w", ep.HostIf, err)
	}
	if err := netlink.LinkSetAlias(host, aliasPrefix+"ep/"+ep.ID); err != nil {
		return fmt.Errorf("mark %s: %w", ep.HostIf, err)
	}
	if err := netlink.LinkSetMaster(host, br); err != nil {
		return fmt.Errorf("attach %s to %s: %w", ep.HostIf, n.Bridge, err)
	}
	// Hairpin mode, as Docker sets it without a userland proxy: a
	// container reaching its own published port through the host is
	// DNATed back out of the bridge port it came in on.
	if err := netlink.LinkSetHairpin(host, true); err != nil {
		return fmt.Errorf("set hairpin mode on %s: %w", ep.HostIf, err)
	}
	return nil
}

// endpointMAC is the endpoint's MAC: the one asked for, or derived from its
// address as Docker does.
func endpointMAC(ep *Endpoint) (net.HardwareAddr, error) {
	if ep.MAC == "" {
		return MACFromIP(ep.IP), nil
	}
	mac, err := net.ParseMAC(ep.MAC)
	if err != nil {
		return nil, fmt.Errorf("MAC address %q: %w", ep.MAC, err)
	}
	return mac, nil
}

// createHandOff makes an endpoint's veth pair with both sides in the
// daemon's namespace: the host side on the bridge, down; the container side
// named ep.IfName, with its MAC and MTU, down and without an address, for
// the caller to move into the container and configure (Docker's engine
// does both after Join, from what the driver answered).
func (NetlinkHost) createHandOff(n *Network, ep *Endpoint) error {
	if ep.HostIf != "" {
		if l, err := netlink.LinkByName(ep.HostIf); err == nil && l.Attrs().Alias == spareAlias(ep.HostIf) {
			return takeSpare(n, ep, l)
		}
	}
	veth, err := addVeth(n, ep, nil)
	if err != nil {
		return err
	}
	ep.MAC, ep.DefaultRoute = veth.PeerHardwareAddr.String(), false
	return nil
}

// spareAlias marks a spare veth pair's host side (name).
func spareAlias(name string) string { return aliasPrefix + "spare/" + name }

// sparePeer is the name of a spare's container side while it waits.
func sparePeer(host string) string { return "bps" + strings.TrimPrefix(host, "veth") }

// CreateSpare implements Host: host side "veth" + 7 hex characters, as
// any endpoint's, and its peer "bps" + the same 7.
func (NetlinkHost) CreateSpare() (string, error) {
	name := randomVethName()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: sparePeer(name)}
	if err := netlink.LinkAdd(veth); err != nil {
		return "", fmt.Errorf("create spare veth %s: %w", name, err)
	}
	if err := netlink.LinkSetAlias(veth, spareAlias(name)); err != nil {
		return "", errors.Join(fmt.Errorf("mark %s: %w", name, err), netlink.LinkDel(veth))
	}
	return name, nil
}

// DeleteSpare implements Host.
func (h NetlinkHost) DeleteSpare(name string) error {
	return h.deleteOwned(name, spareAlias(name))
}

// takeSpare makes spare host (its programs attached already) endpoint
// ep's pair, as createHandOff would have made it: the container side
// renamed to ep.IfName with its MAC, both sides with the network's MTU,
// the host side marked as the endpoint's and on the bridge. On error the
// caller deletes the spare (its programs first).
func takeSpare(n *Network, ep *Endpoint, host netlink.Link) error {
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", n.Bridge, err)
	}
	mac, err := endpointMAC(ep)
	if err != nil {
		return err
	}
	peer, err := netlink.LinkByName(sparePeer(ep.HostIf))
	if err != nil {
		return fmt.Errorf("look up %s: %w", sparePeer(ep.HostIf), err)
	}
	if err := netlink.LinkSetName(peer, ep.IfName); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("name %s's peer %s: an interface %s already exists: %w", ep.HostIf, ep.IfName, ep.IfName, err)
		}
		return fmt.Errorf("name %s's peer %s: %w", ep.HostIf, ep.IfName, err)
	}
	if err := netlink.LinkSetHardwareAddr(peer, mac); err != nil {
		return fmt.Errorf("set the MAC of %s: %w", ep.IfName, err)
	}
	for _, l := range []netlink.Link{host, peer} {
		if n.MTU == 0 || l.Attrs().MTU == n.MTU {
			continue
		}
		if err := netlink.LinkSetMTU(l, n.MTU); err != nil {
			return fmt.Errorf("set the MTU of %s: %w", l.Attrs().Name, err)
		}
	}
	if err := attachHostSide(n, ep, br); err != nil {
		return err
	}
	ep.MAC, ep.DefaultRoute = mac.String(), false
	return nil
}

// addVeth creates an endpoint's veth pair, its container side in peerNS
// (nil: the daemon's namespace), and makes the host side a port of the
// network's bridge (attachHostSide). On error nothing is left.
func addVeth(n *Network, ep *Endpoint, peerNS any) (_ *netlink.Veth, err error) {
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return nil, fmt.Errorf("look up bridge %s: %w", n.Bridge, err)
	}
	if ep.HostIf == "" {
		ep.HostIf = randomVethName()
	}
	mac, err := endpointMAC(ep)
	if err != nil {
		return nil, err
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: ep.HostIf, MTU: n.MTU},
		PeerName:         ep.IfName,
		PeerHardwareAddr: mac,
		PeerNamespace:    peerNS,
		PeerMTU:          uint32(n.MTU),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create veth %s: an interface %s or %s already exists: %w", ep.HostIf, ep.HostIf, ep.IfName, err)
		}
		return nil, fmt.Errorf("create veth %s: %w", ep.HostIf, err)
	}
	if err := attachHostSide(n, ep, br); err != nil {
		return nil, errors.Join(err, netlink.LinkDel(veth))
	}
	return veth, nil
}

// CheckEndpoint implements Host.
func (h NetlinkHost) CheckEndpoint(n *Network, ep *Endpoint) error {
	ok, err := h.EndpointPresent(n, ep)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("veth %s is missing or not on bridge %s", ep.HostIf, n.Bridge)
	}
	if l, err := netlink.LinkByName(ep.HostIf); err != nil || l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("veth %s is down", ep.HostIf)
	}
	if ep.HandedOff() {
		return nil // the container side is its engine's
	}
	nsh, err := netns.GetFromPath(ep.NetNS)
	if err != nil {
		return fmt.Errorf("netns %s: %w", ep.NetNS, err)
	}
	defer nsh.Close()
	in, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", ep.NetNS, err)
	}
	defer in.Close()
	peer, err := in.LinkByName(ep.IfName)
	if err != nil {
		return fmt.Errorf("no interface %s in %s", ep.IfName, ep.NetNS)
	}
	switch {
	case peer.Attrs().HardwareAddr.String() != ep.MAC:
		return fmt.Errorf("%s has MAC %s, want %s", ep.IfName, peer.Attrs().HardwareAddr, ep.MAC)
	case peer.Attrs().Flags&net.FlagUp == 0:
		return fmt.Errorf("%s is down", ep.IfName)
	}
	addrs, err := netlinksafe.AddrListAt(in, peer, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	want := ep.Prefix(n)
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == want.String() }) {
		return fmt.Errorf("%s lacks address %s", ep.IfName, want)
	}
	if ep.IP6.IsValid() {
		addrs, err := netlinksafe.AddrListAt(in, peer, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		want := ep.Prefix6(n)
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == want.String() }) {
			return fmt.Errorf("%s lacks address %s", ep.IfName, want)
		}
	}
	if ep.DefaultRoute {
		if err := checkDefaultRoute(in, peer, netlink.FAMILY_V4, n.Gateway); err != nil {
			return err
		}
		if ep.IP6.IsValid() {
			return checkDefaultRoute(in, peer, netlink.FAMILY_V6, n.Gateway6)
		}
	}
	return nil
}

// checkDefaultRoute reports an error unless peer has a default route of
// family via gw.
func checkDefaultRoute(in *netlink.Handle, peer netlink.Link, family int, gw netip.Addr) error {
	routes, err := netlinksafe.RouteListFiltered(in, family, &netlink.Route{LinkIndex: peer.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		return err
	}
	isDefault := func(r netlink.Route) bool { return netlinksafe.IsDefaultRoute(r) && r.Gw.Equal(gw.AsSlice()) }
	if !slices.ContainsFunc(routes, isDefault) {
		return fmt.Errorf("no default route via %s on %s", gw, peer.Attrs().Name)
	}
	return nil
}

// EndpointPresent reports whether ep's host veth exists on n's bridge.
func (NetlinkHost) EndpointPresent(n *Network, ep *Endpoint) (bool, error) {
	l, err := netlink.LinkByName(ep.HostIf)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up %s: %w", ep.HostIf, err)
	}
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return false, nil
	}
	return l.Attrs().MasterIndex == br.Attrs().Index && l.Attrs().Alias == aliasPrefix+"ep/"+ep.ID, nil
}

// DeleteEndpoint deletes ep's veth pair (deleting one side deletes both).
func (h NetlinkHost) DeleteEndpoint(ep *Endpoint) error {
	return h.deleteOwned(ep.HostIf, aliasPrefix+"ep/"+ep.ID)
}

// OwnedLinks lists the interfaces marked as bpfnet's.
func (NetlinkHost) OwnedLinks() ([]OwnedLink, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []OwnedLink
	for _, l := range links {
		rest, ok := strings.CutPrefix(l.Attrs().Alias, aliasPrefix)
		if !ok {
			continue
		}
		kind, id, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		out = append(out, OwnedLink{Name: l.Attrs().Name, Kind: kind, ID: id})
	}
	return out, nil
}

// DeleteLink deletes an interface by name; a missing one is not an error.
func (NetlinkHost) DeleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Locate resolves a container interface to its host-side peer. Inside the
// container, a veth's IFLA_LINK ("iflink" in sysfs) is the ifindex of its
// peer; the peer found by that index on the host must point back, which
// rules out a coincidental index in another namespace.
func (NetlinkHost) Locate(netnsPath, ifname string) (api.Location, error) {
	var loc api.Location
	nsh, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return loc, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer nsh.Close()
	in, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return loc, fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer in.Close()
	cl, err := in.LinkByName(ifname)
	if err != nil {
		return loc, fmt.Errorf("no interface %s in netns %s", ifname, netnsPath)
	}
	loc.IfName, loc.IfIndex = ifname, cl.Attrs().Index
	if cl.Type() != "veth" || cl.Attrs().ParentIndex == 0 {
		return loc, fmt.Errorf("interface %s in %s is a %s, not a veth: it has no host-side peer", ifname, netnsPath, cl.Type())
	}
	hl, err := netlink.LinkByIndex(cl.Attrs().ParentIndex)
	if err != nil || hl.Type() != "veth" || hl.Attrs().ParentIndex != cl.Attrs().Index {
		return loc, fmt.Errorf("the peer of %s in %s (ifindex %d) is not in the daemon's network namespace", ifname, netnsPath, cl.Attrs().ParentIndex)
	}
	loc.HostIf, loc.HostIfIndex = hl.Attrs().Name, hl.Attrs().Index
	if m := hl.Attrs().MasterIndex; m != 0 {
		if br, err := netlink.LinkByIndex(m); err == nil {
			loc.Bridge = br.Attrs().Name
		}
	}
	if id, ok := strings.CutPrefix(hl.Attrs().Alias, aliasPrefix+"ep/"); ok {
		loc.EndpointID = id
	}
	return loc, nil
}

// NetNSExists reports whether path is an openable network namespace.
func (NetlinkHost) NetNSExists(path string) bool {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return false
	}
	h.Close()
	return true
}

// HasAddr reports whether ip is an address of an interface here.
func (NetlinkHost) HasAddr(ip netip.Addr) (bool, error) {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlinksafe.AddrList(nil, family)
	if err != nil {
		return false, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true, nil
		}
	}
	return false, nil
}

// DefaultRouteLinks returns the interfaces of the IPv4 default routes, the
// uplinks unless --uplink names others.
func DefaultRouteLinks() ([]string, error) {
	routes, err := netlinksafe.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []string
	for _, r := range routes {
		if !netlinksafe.IsDefaultRoute(r) {
			continue
		}
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && !slices.Contains(out, l.Attrs().Name) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// WatchDefaultRoutes calls changed with DefaultRouteLinks each time they
// differ from the last ones it saw (current at first, and checked once at
// once, so a change since current was read is not missed), until ctx
// ends: as a default route comes or goes (DHCP late at boot, a VPN's
// route, another network), or the interface of one goes down or away (the
// kernel then removes its IPv4 routes without a notification of each).
func WatchDefaultRoutes(ctx context.Context, current []string, changed func([]string)) error {
	routes := make(chan netlink.RouteUpdate, 64)
	links := make(chan netlink.LinkUpdate, 256)
	done := make(chan struct{})
	if err := errors.Join(netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{}),
		netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{})); err != nil {
		close(done)
		return fmt.Errorf("watch default routes: %w", err)
	}
	check := func() {
		if now, err := DefaultRouteLinks(); err == nil && !slices.Equal(now, current) {
			current = now
			changed(now)
		}
	}
	go func() {
		defer close(done)
		check()
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-routes:
				if !ok {
					return
				}
				if u.Family != netlink.FAMILY_V4 || !netlinksafe.IsDefaultRoute(u.Route) {
					continue
				}
			case u, ok := <-links:
				if !ok {
					return
				}
				gone := u.Header.Type == unix.RTM_DELLINK || u.Attrs().Flags&net.FlagUp == 0
				if !gone || !slices.Contains(current, u.Attrs().Name) {
					continue
				}
			}
			check()
		}
	}()
	return nil
}

// CheckLinks returns an error naming the first interface that does not exist.
func CheckLinks(names []string) error {
	for _, n := range names {
		if _, err := netlink.LinkByName(n); err != nil {
			return fmt.Errorf("interface %s not found", n)
		}
	}
	return nil
}

// WatchEndpointLinks calls gone with the endpoint id of every host-side
// veth of ours that the kernel deletes (the container's namespace died, or
// someone deleted the interface), until ctx ends. The deletion message
// still carries the interface's alias, which names the endpoint.
func (NetlinkHost) WatchEndpointLinks(ctx context.Context, gone func(endpointID string)) error {
	ch := make(chan netlink.LinkUpdate, 256)
	done := make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{}); err != nil {
		close(done)
		return fmt.Errorf("watch interfaces: %w", err)
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-ch:
				if !ok {
					return
				}
				if u.Header.Type != unix.RTM_DELLINK {
					continue
				}
				if id, ok := strings.CutPrefix(u.Attrs().Alias, aliasPrefix+"ep/"); ok {
					gone(id)
				}
			}
		}
	}()
	return nil
}
