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
	Name     string `json:"name"`
	Subnet   string `json:"subnet,omitempty"`
	IPRange  string `json:"ip_range,omitempty"`
	Gateway  string `json:"gateway,omitempty"`
	Internal bool   `json:"internal,omitempty"`
	// AuxAddresses are addresses of the subnet, by name, that are never
	// given to an endpoint (`--aux-address`, as Docker's).
	AuxAddresses map[string]string `json:"aux_addresses,omitempty"`
	Options      map[string]string `json:"options,omitempty"`
	// ID is the network's id when the caller has one (Docker's network
	// id: 64 hex digits); empty, bpfnet makes one.
	ID string `json:"id,omitempty"`
}

// CreateEndpointRequest is what `endpoint create` asks for.
type CreateEndpointRequest struct {
	Network string `json:"network"`
	NetNS   string `json:"netns,omitempty"`
	PID     int    `json:"pid,omitempty"`
	IP      string `json:"ip,omitempty"`
	IfName  string `json:"ifname,omitempty"`
	Name    string `json:"name,omitempty"`
	// Ports are -p specs: [HOSTIP:]HOSTPORT:PORT[/tcp|udp].
	Ports []string `json:"ports,omitempty"`
	// MAC is the container interface's MAC address; empty, it is derived
	// from the address as Docker does (02:42 and the four address bytes).
	MAC string `json:"mac,omitempty"`
	// ID is the endpoint's id when the caller has one (Docker's endpoint
	// id); empty, bpfnet makes one.
	ID string `json:"id,omitempty"`
	// ContainerID is the container engine's id of the container (CNI's
	// CNI_CONTAINERID); Runtime names what attached it ("cni"), so that
	// its garbage collection removes its own endpoints only; Labels
	// describe the container (Kubernetes' pod namespace and name).
	ContainerID string            `json:"container_id,omitempty"`
	Runtime     string            `json:"runtime,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// HandOff leaves the container side of the veth pair in the daemon's
	// namespace, down and unconfigured, named by the endpoint's IfName,
	// for a caller that moves it into the container itself (Docker's
	// engine does, after its Join); NetNS and PID are then empty.
	HandOff bool `json:"handoff,omitempty"`
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
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	NetworkID string    `json:"network_id"`
	Created   time.Time `json:"created"`
	// NetNS is the path of the container's network namespace.
	NetNS string `json:"netns"`
	// IfName is the interface name inside the container.
	IfName string `json:"ifname"`
	// HostIf is the host-side veth.
	HostIf string     `json:"host_if"`
	IP     netip.Addr `json:"ip"`
	MAC    string     `json:"mac"`
	// DefaultRoute: the namespace's default route is this endpoint's.
	DefaultRoute bool          `json:"default_route,omitempty"`
	Ports        []PortMapping `json:"ports,omitempty"`
	Network      string        `json:"network"`
	Subnet       string        `json:"subnet"`
	Gateway      string        `json:"gateway"`
	// ContainerID, Runtime and Labels are as created (CreateEndpointRequest).
	ContainerID string            `json:"container_id,omitempty"`
	Runtime     string            `json:"runtime,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Counters are the traffic of its host-side veth (nil if unknown).
	Counters *EndpointCounters `json:"counters,omitempty"`
}

// PortMapping is one published port: HostIP:HostPort (any host address
// when HostIP is 0.0.0.0) leads to the endpoint's Port.
type PortMapping struct {
	Proto    string     `json:"proto"` // "tcp" or "udp"
	HostIP   netip.Addr `json:"host_ip"`
	HostPort uint16     `json:"host_port"`
	Port     uint16     `json:"port"`
}

// String prints the mapping as `docker ps` does: 0.0.0.0:8080->80/tcp.
func (p PortMapping) String() string {
	return netip.AddrPortFrom(p.HostIP, p.HostPort).String() + "->" + strconv.Itoa(int(p.Port)) + "/" + p.Proto
}

// EndpointCounters are an endpoint's counters in both directions.
type EndpointCounters struct {
	FromContainer Counts `json:"from_container"`
	ToContainer   Counts `json:"to_container"`
}

// Counts are packets, bytes and drops by reason of one direction.
type Counts struct {
	Packets uint64            `json:"packets"`
	Bytes   uint64            `json:"bytes"`
	Drops   map[string]uint64 `json:"drops,omitempty"`
}

// MonitorEvent is one dropped packet, as `bpfnet monitor` shows it.
type MonitorEvent struct {
	Time      time.Time `json:"time"`
	Endpoint  string    `json:"endpoint,omitempty"`
	Network   string    `json:"network,omitempty"`
	Interface string    `json:"interface,omitempty"`
	Direction string    `json:"direction"`
	Reason    string    `json:"reason"`
	Proto     string    `json:"proto,omitempty"`
	Src       string    `json:"src,omitempty"`
	Dst       string    `json:"dst,omitempty"`
}

// LocateRequest asks for the host side of a container interface.
type LocateRequest struct {
	NetNS  string `json:"netns,omitempty"`
	PID    int    `json:"pid,omitempty"`
	IfName string `json:"ifname,omitempty"`
}

// Location is the host side of a container interface.
type Location struct {
	// Container side.
	IfName  string `json:"ifname"`
	IfIndex int    `json:"ifindex"`
	// Host side.
	HostIf      string `json:"host_if"`
	HostIfIndex int    `json:"host_ifindex"`
	Bridge      string `json:"bridge,omitempty"`
	// EndpointID is set when the interface is a bpfnet endpoint, with its
	// name and its container engine's id (CNI's container id).
	EndpointID  string `json:"endpoint_id,omitempty"`
	Endpoint    string `json:"endpoint,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
}

// Status describes the running daemon.
type Status struct {
	Version  string `json:"version"`
	Datapath string `json:"datapath"`
	// DatapathReason says why this datapath runs (what auto found).
	DatapathReason string `json:"datapath_reason,omitempty"`
	// Attach is the eBPF attach mode in use: tcx or tc.
	Attach      string       `json:"attach,omitempty"`
	BPFFS       string       `json:"bpffs,omitempty"`
	Attachments []Attachment `json:"attachments,omitempty"`
	// Stats are the eBPF datapath's event counters (translations made,
	// refused, expired; packets taking each fast path).
	Stats       map[string]uint64 `json:"stats,omitempty"`
	ChainPrefix string            `json:"chain_prefix,omitempty"`
	// Cgroup is the cgroup v2 directory of the socket programs that let
	// the host's own sockets reach published ports (eBPF datapath; empty
	// when they cannot).
	Cgroup string `json:"cgroup,omitempty"`
	// Warnings are what the daemon could not do as an operator would
	// expect (pins that end with the daemon, no cgroup v2, ...).
	Warnings  []string `json:"warnings,omitempty"`
	StateDir  string   `json:"state_dir"`
	Uplinks   []string `json:"uplinks"`
	Networks  int      `json:"networks"`
	Endpoints int      `json:"endpoints"`
	// EndpointsReleased counts endpoints released because their interface
	// disappeared (their container's network namespace was deleted).
	EndpointsReleased uint64 `json:"endpoints_released"`
}

// Attachment is one eBPF program on an interface hook; Mode is empty when
// it should be there and is not.
type Attachment struct {
	Interface string `json:"interface"`
	Hook      string `json:"hook"`
	Mode      string `json:"mode"`
	Program   string `json:"program"`
	ProgramID uint32 `json:"program_id"`
}

// NATEntry is one translation of the eBPF datapath.
type NATEntry struct {
	// Kind is "masquerade" or "published" (a connection to a published
	// port; Translated is the host address and port the peer used).
	Kind  string `json:"kind"`
	Proto string `json:"proto"`
	// Container is the container's address and port (ICMP: identifier).
	Container string `json:"container"`
	// Translated is the address and port the outside sees.
	Translated string `json:"translated"`
	// Remote is the peer outside.
	Remote  string  `json:"remote"`
	State   string  `json:"state"`
	AgeSec  float64 `json:"age_seconds"`
	IdleSec float64 `json:"idle_seconds"`
}

// NATStats are the eBPF datapath's translation numbers.
type NATStats struct {
	// Entries are the live translations.
	Entries uint64 `json:"entries"`
	// Created, Exhausted (refused: no free port) and Expired count
	// translations since the maps were created.
	Created   uint64 `json:"created"`
	Exhausted uint64 `json:"exhausted"`
	Expired   uint64 `json:"expired"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Message string `json:"message"`
}
