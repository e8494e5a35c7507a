package network

import (
	"context"
	"net/netip"

	"github.com/bpfnet/bpfnet/api"
)

// Host is the plumbing the manager needs from the host: bridges, veths,
// addresses and routes in the daemon's network namespace. The Linux
// implementation is NetlinkHost.
type Host interface {
	// Routes lists the IPv4 destinations routed in the daemon's namespace,
	// so automatically picked subnets avoid them.
	Routes() ([]netip.Prefix, error)
	// LinkInUse reports whether an interface with this name exists in the
	// daemon's namespace and is not ours.
	LinkInUse(name string) (bool, error)
	// EnsureBridge creates the network's bridge, or adopts it when it
	// already exists and is ours, with its gateway address, MTU and up.
	EnsureBridge(n *Network) error
	DeleteBridge(n *Network) error
	// CreateEndpoint makes the veth pair, moves the container side into
	// ep.NetNS as ep.IfName and configures MAC, address and routes. It fills
	// ep.HostIf (when empty) and ep.DefaultRoute. On error nothing is left.
	// The host side is left down, so nothing flows before EndpointUp.
	// A hand-off endpoint (ep.HandedOff) whose ep.HostIf names a spare
	// (CreateSpare) takes that pair instead of making one; a spare that
	// cannot be taken is left for the caller to delete.
	CreateEndpoint(n *Network, ep *Endpoint) error
	// EndpointUp sets the host side up, once the enforcer's policy for the
	// endpoint is in place.
	EndpointUp(ep *Endpoint) error
	// EndpointDown sets the host side down (no traffic while its policy is
	// removed); an endpoint whose veth is gone is not an error.
	EndpointDown(ep *Endpoint) error
	// EndpointPresent reports whether the endpoint's veth pair still exists
	// (host side present and enslaved to the network's bridge).
	EndpointPresent(n *Network, ep *Endpoint) (bool, error)
	// CheckEndpoint reports what is wrong with an endpoint's plumbing: the
	// host side up on the bridge, and, unless handed off, the container
	// side with its MAC, address and routes (CNI's CHECK).
	CheckEndpoint(n *Network, ep *Endpoint) error
	DeleteEndpoint(ep *Endpoint) error
	// CreateSpare makes a veth pair for a hand-off endpoint to come: both
	// sides in the daemon's namespace, down, on no bridge, marked as a
	// spare. It returns the host side's name.
	CreateSpare() (string, error)
	// DeleteSpare deletes a spare no endpoint took.
	DeleteSpare(name string) error
	// OwnedLinks lists interfaces bpfnet created (marked by their alias),
	// by name, with the id of the network or endpoint they belong to.
	OwnedLinks() ([]OwnedLink, error)
	DeleteLink(name string) error
	// Locate finds the host side of any veth-backed container interface.
	Locate(netnsPath, ifname string) (api.Location, error)
	// NetNSExists reports whether a namespace path can be opened.
	NetNSExists(path string) bool
	// WatchEndpointLinks calls gone with the endpoint id of every
	// host-side veth of ours the kernel deletes, until ctx ends.
	WatchEndpointLinks(ctx context.Context, gone func(endpointID string)) error
	// HasAddr reports whether ip is assigned to an interface of the
	// daemon's namespace (127.0.0.1 on lo counts).
	HasAddr(ip netip.Addr) (bool, error)
}

// OwnedLink is an interface created by bpfnet.
type OwnedLink struct {
	Name string
	Kind string // "net" for bridges, "ep" for host-side veths, "spare" for spares
	ID   string // network or endpoint id
}
