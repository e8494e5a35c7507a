// Package api is bpfnetd's HTTP+JSON interface on a unix socket: the
// request and response types and the client that the CLI (and every other
// front-end) uses. It depends on the standard library only, so a client
// links nothing of the host plumbing; the server is api/server.
package api

import (
	"net/netip"
	"strconv"
	"time"
)

// DefaultSocket is bpfnetd's default API socket.
const DefaultSocket = "/run/bpfnet/bpfnet.sock"

// CreateNetworkRequest is what `network create` asks for.
type CreateNetworkRequest struct {
	Name     string `json:"Name"`
	Subnet   string `json:"Subnet,omitempty"`
	IPRange  string `json:"IPRange,omitempty"`
	Gateway  string `json:"Gateway,omitempty"`
	Internal bool   `json:"Internal,omitempty"`
	// EnableIPv6 makes the network dual-stack (`--ipv6`): besides its
	// IPv4 subnet it gets Subnet6 (a unique local /64 when empty), with
	// IPRange6 and Gateway6 as their IPv4 counterparts.
	EnableIPv6 bool   `json:"EnableIPv6,omitempty"`
	Subnet6    string `json:"Subnet6,omitempty"`
	IPRange6   string `json:"IPRange6,omitempty"`
	Gateway6   string `json:"Gateway6,omitempty"`
	// AuxAddresses are addresses of the subnet, by name, that are never
	// given to an endpoint (`--aux-address`, as Docker's).
	AuxAddresses map[string]string `json:"AuxAddresses,omitempty"`
	Options      map[string]string `json:"Options,omitempty"`
	// Labels are metadata (`--label KEY=VALUE`); Attachable is recorded
	// as Docker's flag is.
	Labels     map[string]string `json:"Labels,omitempty"`
	Attachable bool              `json:"Attachable,omitempty"`
	// ID is the network's id when the caller has one (Docker's network
	// id: 64 hex digits); empty, bpfnet makes one.
	ID string `json:"ID,omitempty"`
}

// CreateEndpointRequest is what `endpoint create` asks for.
type CreateEndpointRequest struct {
	Network string `json:"Network"`
	NetNS   string `json:"NetNS,omitempty"`
	PID     int    `json:"PID,omitempty"`
	IP      string `json:"IP,omitempty"`
	// IP6 is the IPv6 address on a dual-stack network (default: the
	// first free one of its IPv6 range).
	IP6    string `json:"IP6,omitempty"`
	IfName string `json:"IfName,omitempty"`
	Name   string `json:"Name,omitempty"`
	// Ports are -p specs: [HOSTIP:]HOSTPORT:PORT[/tcp|udp].
	Ports []string `json:"Ports,omitempty"`
	// MAC is the container interface's MAC address; empty, it is derived
	// from the address as Docker does (02:42 and the four address bytes).
	MAC string `json:"MAC,omitempty"`
	// ID is the endpoint's id when the caller has one (Docker's endpoint
	// id); empty, bpfnet makes one.
	ID string `json:"ID,omitempty"`
	// ContainerID is the container engine's id of the container (CNI's
	// CNI_CONTAINERID); Runtime names what attached it ("cni"), so that
	// its garbage collection removes its own endpoints only; Labels
	// describe the container (Kubernetes' pod namespace and name).
	ContainerID string            `json:"ContainerID,omitempty"`
	Runtime     string            `json:"Runtime,omitempty"`
	Labels      map[string]string `json:"Labels,omitempty"`
	// HandOff leaves the container side of the veth pair in the daemon's
	// namespace, down and unconfigured, named by the endpoint's IfName,
	// for a caller that moves it into the container itself (Docker's
	// engine does, after its Join); NetNS and PID are then empty.
	HandOff bool `json:"HandOff,omitempty"`
}

// NetworkInspect is a network shaped like `docker network inspect` output.
type NetworkInspect struct {
	Name       string                      `json:"Name"`
	ID         string                      `json:"Id"`
	Created    time.Time                   `json:"Created"`
	Scope      string                      `json:"Scope"`
	Driver     string                      `json:"Driver"`
	EnableIPv6 bool                        `json:"EnableIPv6"`
	IPAM       IPAM                        `json:"IPAM"`
	Internal   bool                        `json:"Internal"`
	Attachable bool                        `json:"Attachable"`
	Ingress    bool                        `json:"Ingress"`
	ConfigFrom ConfigFrom                  `json:"ConfigFrom"`
	ConfigOnly bool                        `json:"ConfigOnly"`
	Containers map[string]ContainerInspect `json:"Containers"`
	Options    map[string]string           `json:"Options"`
	Labels     map[string]string           `json:"Labels"`
	// Bridge is not in Docker's output; it saves a lookup.
	Bridge string `json:"Bridge"`
}

// IPAM is the address configuration of a network.
type IPAM struct {
	Driver  string            `json:"Driver"`
	Options map[string]string `json:"Options"`
	Config  []IPAMConfig      `json:"Config"`
}

// IPAMConfig is one subnet of a network.
type IPAMConfig struct {
	Subnet  string `json:"Subnet"`
	IPRange string `json:"IPRange,omitempty"`
	Gateway string `json:"Gateway"`
	// AuxiliaryAddresses are the reserved addresses (`--aux-address`).
	AuxiliaryAddresses map[string]string `json:"AuxiliaryAddresses,omitempty"`
}

// ConfigFrom is always empty (Docker's config-only networks do not exist here).
type ConfigFrom struct {
	Network string `json:"Network"`
}

// ContainerInspect is one endpoint in a network's Containers map.
type ContainerInspect struct {
	Name        string `json:"Name"`
	EndpointID  string `json:"EndpointID"`
	MacAddress  string `json:"MacAddress"`
	IPv4Address string `json:"IPv4Address"`
	IPv6Address string `json:"IPv6Address"`
	// Ports is not in Docker's output (docker ps shows them): the
	// endpoint's published ports as 0.0.0.0:8080->80/tcp.
	Ports []string `json:"Ports,omitempty"`
}

// Endpoint is one container interface attached to a network, with its
// network's name and addresses and its counters.
type Endpoint struct {
	ID        string    `json:"Id"`
	Name      string    `json:"Name"`
	NetworkID string    `json:"NetworkID"`
	Created   time.Time `json:"Created"`
	// NetNS is the path of the container's network namespace.
	NetNS string `json:"NetNS"`
	// IfName is the interface name inside the container.
	IfName string `json:"IfName"`
	// HostIf is the host-side veth.
	HostIf string     `json:"HostIf"`
	IP     netip.Addr `json:"IP"`
	// IP6 is the IPv6 address on a dual-stack network.
	IP6 netip.Addr `json:"IP6,omitzero"`
	MAC string     `json:"MAC"`
	// DefaultRoute: the namespace's default route is this endpoint's.
	DefaultRoute bool          `json:"DefaultRoute,omitempty"`
	Ports        []PortMapping `json:"Ports,omitempty"`
	Network      string        `json:"Network"`
	Subnet       string        `json:"Subnet"`
	Gateway      string        `json:"Gateway"`
	// Subnet6 and Gateway6 are the network's IPv6 ones (dual-stack only).
	Subnet6  string `json:"Subnet6,omitempty"`
	Gateway6 string `json:"Gateway6,omitempty"`
	// ContainerID, Runtime and Labels are as created (CreateEndpointRequest).
	ContainerID string            `json:"ContainerID,omitempty"`
	Runtime     string            `json:"Runtime,omitempty"`
	Labels      map[string]string `json:"Labels,omitempty"`
	// Counters are the traffic of its host-side veth (nil if unknown).
	Counters *EndpointCounters `json:"Counters,omitempty"`
}

// PortMapping is one published port: HostIP:HostPort (any host address
// when HostIP is 0.0.0.0) leads to the endpoint's Port.
type PortMapping struct {
	Proto    string     `json:"Proto"` // "tcp" or "udp"
	HostIP   netip.Addr `json:"HostIP"`
	HostPort uint16     `json:"HostPort"`
	Port     uint16     `json:"Port"`
}

// String prints the mapping as `docker ps` does: 0.0.0.0:8080->80/tcp.
func (p PortMapping) String() string {
	return netip.AddrPortFrom(p.HostIP, p.HostPort).String() + "->" + strconv.Itoa(int(p.Port)) + "/" + p.Proto
}

// EndpointCounters are an endpoint's counters in both directions.
type EndpointCounters struct {
	FromContainer Counts `json:"FromContainer"`
	ToContainer   Counts `json:"ToContainer"`
}

// Counts are packets, bytes and drops by reason of one direction.
type Counts struct {
	Packets   uint64            `json:"Packets"`
	Bytes     uint64            `json:"Bytes"`
	Drops     map[string]uint64 `json:"Drops,omitempty"`     // dropped packets by reason
	DropBytes map[string]uint64 `json:"DropBytes,omitempty"` // their bytes (frame lengths) by reason
	// Families splits the same counts by IP family, FamilyIPv4 (IPv4, the
	// ARP that serves it, the odd frame of another type) and FamilyIPv6,
	// where the datapath tells them apart: everything in eBPF mode, the
	// drops in iptables mode (iptables or ip6tables rules).
	Families map[string]Counts `json:"Families,omitempty"`
}

// The IP families of Counts.Families.
const (
	FamilyIPv4 = "ipv4"
	FamilyIPv6 = "ipv6"
)

// AddTraffic adds packets and bytes of a family to c.
func (c *Counts) AddTraffic(family string, packets, bytes uint64) {
	c.Packets += packets
	c.Bytes += bytes
	f := c.family(family)
	f.Packets += packets
	f.Bytes += bytes
	c.Families[family] = f
}

// AddDrops adds dropped packets and their bytes of a family, for a
// reason, to c.
func (c *Counts) AddDrops(family, reason string, packets, bytes uint64) {
	addDrops(c, reason, packets, bytes)
	f := c.family(family)
	addDrops(&f, reason, packets, bytes)
	c.Families[family] = f
}

func (c *Counts) family(name string) Counts {
	if c.Families == nil {
		c.Families = map[string]Counts{}
	}
	return c.Families[name]
}

func addDrops(c *Counts, reason string, packets, bytes uint64) {
	if c.Drops == nil {
		c.Drops, c.DropBytes = map[string]uint64{}, map[string]uint64{}
	}
	c.Drops[reason] += packets
	c.DropBytes[reason] += bytes
}

// MonitorEvent is one dropped packet, as `bpfnet monitor` shows it.
type MonitorEvent struct {
	Time      time.Time `json:"Time"`
	Endpoint  string    `json:"Endpoint,omitempty"`
	Network   string    `json:"Network,omitempty"`
	Interface string    `json:"Interface,omitempty"`
	Direction string    `json:"Direction"`
	Reason    string    `json:"Reason"`
	Proto     string    `json:"Proto,omitempty"`
	Src       string    `json:"Src,omitempty"` // address, with :port for TCP and UDP
	Dst       string    `json:"Dst,omitempty"`
	ICMPType  string    `json:"ICMPType,omitempty"`
	Length    int       `json:"Length,omitempty"` // frame length in bytes
}

// LocateRequest asks for the host side of a container interface.
type LocateRequest struct {
	NetNS  string `json:"NetNS,omitempty"`
	PID    int    `json:"PID,omitempty"`
	IfName string `json:"IfName,omitempty"`
}

// Location is the host side of a container interface.
type Location struct {
	// Container side.
	IfName  string `json:"IfName"`
	IfIndex int    `json:"IfIndex"`
	// Host side.
	HostIf      string `json:"HostIf"`
	HostIfIndex int    `json:"HostIfIndex"`
	Bridge      string `json:"Bridge,omitempty"`
	// EndpointID is set when the interface is a bpfnet endpoint, with its
	// name and its container engine's id (CNI's container id).
	EndpointID  string `json:"EndpointID,omitempty"`
	Endpoint    string `json:"Endpoint,omitempty"`
	ContainerID string `json:"ContainerID,omitempty"`
}

// Status describes the running daemon.
type Status struct {
	Version  string `json:"Version"`
	Datapath string `json:"Datapath"`
	// DatapathReason says why this datapath runs (what auto found).
	DatapathReason string `json:"DatapathReason,omitempty"`
	// Attach is the eBPF attach mode in use: tcx or tc.
	Attach      string       `json:"Attach,omitempty"`
	BPFFS       string       `json:"BPFFS,omitempty"`
	Attachments []Attachment `json:"Attachments,omitempty"`
	// Stats are the eBPF datapath's event counters (translations made,
	// refused, expired; packets taking each fast path).
	Stats       map[string]uint64 `json:"Stats,omitempty"`
	ChainPrefix string            `json:"ChainPrefix,omitempty"`
	// Cgroup is the cgroup v2 directory of the socket programs that let
	// the host's own sockets reach published ports (eBPF datapath; empty
	// when they cannot).
	Cgroup string `json:"Cgroup,omitempty"`
	// Warnings are what the daemon could not do as an operator would
	// expect (pins that end with the daemon, no cgroup v2, ...).
	Warnings  []string `json:"Warnings,omitempty"`
	StateDir  string   `json:"StateDir"`
	Uplinks   []string `json:"Uplinks"`
	Networks  int      `json:"Networks"`
	Endpoints int      `json:"Endpoints"`
	// EndpointsReleased counts endpoints released because their interface
	// disappeared (their container's network namespace was deleted).
	EndpointsReleased uint64 `json:"EndpointsReleased"`
	// SpareVeths is how many veth pairs wait, programs attached, for the
	// Docker driver's next endpoints (bpfnetd --spare-veths), and
	// SparesTaken how many endpoints took one since the daemon started.
	SpareVeths  int    `json:"SpareVeths"`
	SparesTaken uint64 `json:"SparesTaken"`
}

// Attachment is one eBPF program on an interface hook; Mode is empty when
// it should be there and is not.
type Attachment struct {
	Interface string `json:"Interface"`
	Hook      string `json:"Hook"`
	Mode      string `json:"Mode"`
	Program   string `json:"Program"`
	ProgramID uint32 `json:"ProgramID"`
}

// NATEntry is one translation of the eBPF datapath.
type NATEntry struct {
	// Kind is "masquerade" or "published" (a connection to a published
	// port; Translated is the host address and port the peer used).
	Kind  string `json:"Kind"`
	Proto string `json:"Proto"`
	// Container is the container's address and port (ICMP: identifier).
	Container string `json:"Container"`
	// Translated is the address and port the outside sees.
	Translated string `json:"Translated"`
	// Remote is the peer outside.
	Remote      string  `json:"Remote"`
	State       string  `json:"State"`
	AgeSeconds  float64 `json:"AgeSeconds"`
	IdleSeconds float64 `json:"IdleSeconds"`
}

// NATStats are the eBPF datapath's translation numbers.
type NATStats struct {
	// Entries are the live translations.
	Entries uint64 `json:"Entries"`
	// Created, Exhausted (refused: no free port) and Expired count
	// translations since the maps were created.
	Created   uint64 `json:"Created"`
	Exhausted uint64 `json:"Exhausted"`
	Expired   uint64 `json:"Expired"`
}

// Version is a binary's build (`bpfnet version`, GET /v1/version).
type Version struct {
	Version   string
	Commit    string
	Built     string
	GoVersion string
	Os        string
	Arch      string
}

// Error is the body of every non-2xx response.
type Error struct {
	Message string `json:"message"`
}
