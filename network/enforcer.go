package network

import (
	"context"
	"net/netip"
	"time"

	"github.com/bpfnet/bpfnet/api"
)

// View is the desired state an enforcer works from: every network in
// creation order (oldest first) and every endpoint.
type View struct {
	Networks  []*Network
	Endpoints []*Endpoint
}

// Network returns the network with the given id, or nil.
func (v View) Network(id string) *Network {
	for _, n := range v.Networks {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Enforcer applies the policy of the desired state to a datapath (iptables
// rules, or BPF maps and programs). The manager calls it after the host
// plumbing of a change exists and before the change is persisted; each
// call gets the view as it is with the change applied. Calls are serialised.
type Enforcer interface {
	// Name is the datapath's name as shown by `bpfnet status`.
	Name() string
	// Reconcile converges the datapath to v at daemon start: what is
	// missing is added, leftovers of ours that v no longer has are removed,
	// and nothing is duplicated.
	Reconcile(ctx context.Context, v View) error
	NetworkAdded(ctx context.Context, v View, n *Network) error
	NetworkRemoved(ctx context.Context, v View, n *Network) error
	EndpointAdded(ctx context.Context, v View, ep *Endpoint) error
	EndpointRemoved(ctx context.Context, v View, ep *Endpoint) error
	// EndpointPortsChanged publishes ep.Ports instead of old (Docker's
	// engine publishes a container's ports after it joined, and revokes
	// them when it stops).
	EndpointPortsChanged(ctx context.Context, v View, ep *Endpoint, old []PortMapping) error
	// Cleanup removes everything the enforcer ever installed.
	Cleanup(ctx context.Context) error
}

// Optional abilities. An enforcer implements the ones it has; callers ask
// with a type assertion, so nothing above the enforcers needs to know which
// datapath runs (moby's firewaller does the same).

// Limits is an enforcer that can hold only so many networks and endpoints
// (the eBPF datapath's maps have fixed sizes); the manager refuses to
// create more, with a message, before touching the host.
type Limits interface {
	Limits() (networks, endpoints int)
}

// IPv6Enforcer is an enforcer that holds IPv6 traffic to the same
// policy as IPv4. Without it, dual-stack networks are refused before the
// host is touched, and a state holding one does not start.
type IPv6Enforcer interface {
	EnforcesIPv6() bool
}

// Preattacher is an enforcer whose endpoint attachments wait for the
// kernel (TCX: an RCU grace period each, under the RTNL lock) and that can
// make them before an endpoint exists, on the host side of a spare veth
// pair (spares.go).
type Preattacher interface {
	// Preattach attaches the endpoint programs to interface name, which
	// no endpoint holds yet. It reports false, leaving nothing attached,
	// when attaching costs no wait (legacy tc): a spare is not worth
	// keeping then.
	Preattach(name string) (bool, error)
	// Unattach removes what Preattach attached (the spare is deleted
	// unused).
	Unattach(name string) error
}

// UplinkFollower is an enforcer whose uplinks can change while it runs.
// A daemon given no --uplink hands it the interfaces of the default
// routes each time they change.
type UplinkFollower interface {
	SetUplinks(names []string) error
}

// Runner is an enforcer with background work once the state is applied
// (watching addresses, collecting expired entries): Run starts it, and it
// stops when ctx ends.
type Runner interface {
	Run(ctx context.Context) error
}

// Counter is an enforcer that counts traffic and drops.
type Counter interface {
	// Counts reads v's counters now.
	Counts(v View) (Counts, error)
}

// Counts are an enforcer's counters: every endpoint's by endpoint id, and
// the drops not tied to an endpoint (a packet for an address that is no
// endpoint's; in iptables mode every drop) by network id.
type Counts struct {
	Endpoints map[string]api.EndpointCounters
	Networks  map[string]api.EndpointCounters
	// ByFamily says the endpoints' packets and bytes are split by IP
	// family (api.Counts.Families).
	ByFamily bool
}

// DropSource is an enforcer that reports dropped packets as they happen.
type DropSource interface {
	// Drops sends every dropped packet to the returned channel until ctx
	// ends, then closes it.
	Drops(ctx context.Context) (<-chan DropEvent, error)
}

// DropEvent is one dropped packet, with the endpoint (or, for drops not
// tied to one, the network) it was counted on.
type DropEvent struct {
	Time       time.Time
	EndpointID string
	NetworkID  string
	Direction  string // from_container | to_container
	Reason     string
	// What the datapath could read of the packet: its protocol (tcp,
	// udp, icmp, icmpv6, arp, another IP protocol's number, or a frame's
	// "ethertype 0x…"; empty when unknown), its addresses (ARP: sender
	// and target) with ports for TCP and UDP, the ICMP type's name, and
	// the frame's length.
	Proto    string
	Src, Dst netip.AddrPort
	ICMPType string
	Length   int
}

// NATTable is an enforcer that keeps its own translation table.
type NATTable interface {
	NATEntries() ([]api.NATEntry, error)
	NATStats() (api.NATStats, error)
}

// EndpointChecker is an enforcer that can tell whether it holds an
// endpoint whole (its entries and programs), for CNI's CHECK.
type EndpointChecker interface {
	CheckEndpoint(v View, ep *Endpoint) error
}

// Describer is an enforcer with more to show in `bpfnet status` than its
// name: it fills in its part of s (attach mode, pins, event counters). It
// is cheap enough for every scrape.
type Describer interface {
	Describe(s *api.Status)
}

// AttachmentLister is an enforcer that attaches programs to interfaces
// and can list them with their state (one query per hook: for status, not
// for every scrape).
type AttachmentLister interface {
	Attachments() []api.Attachment
}

// Cleaner removes what a datapath left on the host, without the datapath
// running (the other datapath's leftovers at start, --cleanup).
type Cleaner interface {
	// Leftovers reports whether there is anything to remove.
	Leftovers() bool
	Cleanup(ctx context.Context) error
}
