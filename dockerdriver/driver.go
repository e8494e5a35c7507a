// Package dockerdriver makes Docker Engine a client of bpfnetd: it serves
// Docker's remote network driver protocol (NetworkDriver, local scope) and
// translates each call into the calls of the network model the CLI makes,
// so networks and containers Docker creates get the same policy from the
// same enforcer. It keeps no state of its own: Docker's network and
// endpoint ids are the model's ids. It also serves Docker's IPAM protocol
// (ipam.go), so `--ipam-driver bpfnet` uses bpfnet's allocator.
package dockerdriver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/httpserve"
	"github.com/bpfnet/bpfnet/network"
)

// DefaultSocket is where Docker looks for a plugin named bpfnet (its
// discovery directory is /run/docker/plugins; the file name is the driver
// name).
const DefaultSocket = "/run/docker/plugins/bpfnet.sock"

// contentType is what Docker's plugin clients expect.
const contentType = "application/vnd.docker.plugins.v1.1+json"

// Driver answers Docker's calls for one manager.
type Driver struct {
	log *slog.Logger
	mgr *network.Manager
}

// New returns the driver of mgr.
func New(log *slog.Logger, mgr *network.Manager) *Driver {
	return &Driver{log: log, mgr: mgr}
}

// Handler returns the protocol's routes (all POST with JSON bodies).
func (d *Driver) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(method string, h func(r *http.Request) (any, error)) {
		mux.HandleFunc("POST /"+method, func(w http.ResponseWriter, r *http.Request) {
			out, err := h(r)
			if err != nil {
				d.log.Warn("docker driver call failed", "call", method, "err", err)
				status := http.StatusInternalServerError
				if k := network.KindOf(err); k == network.KindInvalid || k == network.KindConflict || k == network.KindNotFound {
					status = http.StatusBadRequest
				}
				write(w, status, errorResponse{Err: err.Error()})
				return
			}
			if out == nil {
				out = struct{}{}
			}
			write(w, http.StatusOK, out)
		})
	}
	route("Plugin.Activate", func(*http.Request) (any, error) {
		return activateResponse{Implements: []string{"NetworkDriver", "IpamDriver"}}, nil
	})
	route("NetworkDriver.GetCapabilities", func(*http.Request) (any, error) {
		return capabilitiesResponse{Scope: "local", ConnectivityScope: "local"}, nil
	})
	route("NetworkDriver.CreateNetwork", d.createNetwork)
	route("NetworkDriver.DeleteNetwork", d.deleteNetwork)
	route("NetworkDriver.CreateEndpoint", d.createEndpoint)
	route("NetworkDriver.EndpointOperInfo", d.endpointInfo)
	route("NetworkDriver.Join", d.join)
	route("NetworkDriver.Leave", func(r *http.Request) (any, error) {
		var req endpointRequest
		return nil, decode(r, &req) // the interface goes back with DeleteEndpoint
	})
	route("NetworkDriver.ProgramExternalConnectivity", d.programConnectivity)
	route("NetworkDriver.RevokeExternalConnectivity", d.revokeConnectivity)
	route("NetworkDriver.DeleteEndpoint", d.deleteEndpoint)
	d.ipamRoutes(route)
	// Swarm's calls: never made for a local-scope driver, answered anyway.
	for _, m := range []string{"NetworkDriver.AllocateNetwork", "NetworkDriver.FreeNetwork", "NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete"} {
		route(m, func(*http.Request) (any, error) { return nil, nil })
	}
	return mux
}

func write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // once the header is out, nobody hears of an error
}

func decode(r *http.Request, v any) error {
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20)).Decode(v); err != nil {
		return &network.Error{Kind: network.KindInvalid, Err: fmt.Errorf("invalid request body: %w", err)}
	}
	return nil
}

func invalid(format string, a ...any) error {
	return &network.Error{Kind: network.KindInvalid, Err: fmt.Errorf(format, a...)}
}

// NetworkName is the name a network Docker created has in bpfnet: the
// protocol does not carry Docker's name, so it is "docker-" and the first
// 12 digits of Docker's network id, which `docker network ls` shows.
func NetworkName(dockerID string) string {
	if len(dockerID) > 12 {
		dockerID = dockerID[:12]
	}
	return "docker-" + dockerID
}

func (d *Driver) createNetwork(r *http.Request) (any, error) {
	var req createNetworkRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	cr, err := toNetworkRequest(req)
	if err != nil {
		return nil, err
	}
	n, err := d.mgr.CreateNetwork(r.Context(), cr)
	if err != nil {
		return nil, err
	}
	d.log.Info("docker network created", "network", n.Name, "subnet", n.Subnet, "bridge", n.Bridge)
	return nil, nil
}

// toNetworkRequest translates Docker's CreateNetwork into the model's
// request: the pool Docker's IPAM gave, its gateway and aux addresses,
// --internal, and the -o options (the bridge driver's keys, which the
// model knows; any other is refused by it). With --ipv6, the IPv6 pool
// too: the network is dual-stack.
func toNetworkRequest(req createNetworkRequest) (api.CreateNetworkRequest, error) {
	out := api.CreateNetworkRequest{ID: req.NetworkID, Name: NetworkName(req.NetworkID)}
	on, err := boolOption(req.Options, optEnableIPv6)
	if err != nil {
		return out, err
	}
	internal, err := boolOption(req.Options, optInternal)
	if err != nil {
		return out, err
	}
	out.Internal = internal
	if g, ok := req.Options[optGeneric]; ok && g != nil {
		generic, ok := g.(map[string]any)
		if !ok {
			return out, invalid("option %s: want a map of strings, got %T", optGeneric, g)
		}
		out.Options = map[string]string{}
		for k, v := range generic {
			s, ok := v.(string)
			if !ok {
				s = fmt.Sprint(v)
			}
			out.Options[k] = s
		}
	}
	switch len(req.IPv4Data) {
	case 0:
		return out, invalid("no IPv4 address pool: bpfnet networks need one (Docker's default IPAM gives it)")
	case 1:
	default:
		return out, invalid("%d IPv4 pools: a bpfnet network has one subnet", len(req.IPv4Data))
	}
	if out.Subnet, out.Gateway, err = poolOf(req.IPv4Data[0], &out.AuxAddresses); err != nil {
		return out, err
	}
	switch {
	case len(req.IPv6Data) > 1:
		return out, invalid("%d IPv6 pools: a bpfnet network has one IPv6 subnet", len(req.IPv6Data))
	case len(req.IPv6Data) == 1:
		out.EnableIPv6 = true
		if out.Subnet6, out.Gateway6, err = poolOf(req.IPv6Data[0], &out.AuxAddresses); err != nil {
			return out, err
		}
	case on:
		out.EnableIPv6 = true // bpfnet picks the IPv6 subnet
	}
	return out, nil
}

// poolOf reads one pool Docker's IPAM gave: its subnet, gateway and aux
// addresses (added to aux).
func poolOf(pool ipamData, aux *map[string]string) (subnet, gateway string, err error) {
	if pool.Gateway != "" {
		gw, err := addrOf(pool.Gateway)
		if err != nil {
			return "", "", invalid("gateway %q: %v", pool.Gateway, err)
		}
		gateway = gw.String()
	}
	for name, a := range pool.AuxAddresses {
		addr, err := addrOf(a)
		if err != nil {
			return "", "", invalid("aux address %s=%q: %v", name, a, err)
		}
		if *aux == nil {
			*aux = map[string]string{}
		}
		(*aux)[name] = addr.String()
	}
	return pool.Pool, gateway, nil
}

// addrOf reads an address Docker sends with or without a prefix length.
func addrOf(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), nil
	}
	return netip.ParseAddr(s)
}

func boolOption(opts map[string]any, key string) (bool, error) {
	switch v := opts[key].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case string:
		switch strings.ToLower(v) {
		case "true", "1":
			return true, nil
		case "false", "0", "":
			return false, nil
		}
	}
	return false, invalid("option %s: want true or false, got %v", key, opts[key])
}

func (d *Driver) deleteNetwork(r *http.Request) (any, error) {
	var req networkRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	err := d.mgr.RemoveNetwork(r.Context(), req.NetworkID)
	if network.KindOf(err) == network.KindNotFound {
		return nil, nil // already gone: Docker may ask again after a failure
	}
	return nil, err
}

// createEndpoint makes the endpoint with the address Docker's IPAM gave
// (or one of bpfnet's when none), its veth pair left in the host's
// namespace for Docker to move at Join. The host side stays down until
// the datapath holds the endpoint, as for any endpoint.
func (d *Driver) createEndpoint(r *http.Request) (any, error) {
	var req createEndpointRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	in := req.Interface
	if in == nil {
		in = &endpointInterface{}
	}
	cr := api.CreateEndpointRequest{ID: req.EndpointID, Network: req.NetworkID, HandOff: true, MAC: in.MacAddress}
	for _, a := range []struct{ in, out *string }{{&in.Address, &cr.IP}, {&in.AddressIPv6, &cr.IP6}} {
		if *a.in != "" {
			addr, err := addrOf(*a.in)
			if err != nil {
				return nil, invalid("address %q: %v", *a.in, err)
			}
			*a.out = addr.String()
		}
	}
	ep, err := d.mgr.CreateEndpoint(r.Context(), cr)
	if err != nil {
		return nil, err
	}
	// Docker takes from the answer only what it did not give.
	out := &endpointInterface{}
	if in.MacAddress == "" {
		out.MacAddress = ep.MAC
	}
	n, err := d.mgr.Network(ep.NetworkID)
	if err != nil {
		return nil, err
	}
	if in.Address == "" {
		out.Address = ep.Prefix(&n).String()
	}
	if in.AddressIPv6 == "" && ep.IP6.IsValid() {
		out.AddressIPv6 = ep.Prefix6(&n).String()
	}
	if *out == (endpointInterface{}) {
		return createEndpointResponse{}, nil
	}
	return createEndpointResponse{Interface: out}, nil
}

func (d *Driver) deleteEndpoint(r *http.Request) (any, error) {
	var req endpointRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	err := d.mgr.RemoveEndpoint(r.Context(), req.EndpointID)
	if network.KindOf(err) == network.KindNotFound {
		// Released already: its container's namespace died and took the
		// veth pair with it.
		return nil, nil
	}
	return nil, err
}

// join names the interface Docker moves into the container and the
// gateway it routes through (always given, so Docker never falls back to
// its docker_gwbridge).
func (d *Driver) join(r *http.Request) (any, error) {
	var req joinRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ep, err := d.mgr.Endpoint(req.EndpointID)
	if err != nil {
		return nil, err
	}
	if !ep.HandedOff() {
		return nil, invalid("endpoint %s was not created by Docker", ep.Name)
	}
	n, err := d.mgr.Network(ep.NetworkID)
	if err != nil {
		return nil, err
	}
	out := joinResponse{InterfaceName: interfaceName{SrcName: ep.IfName, DstPrefix: "eth"}, Gateway: n.Gateway.String()}
	if n.DualStack() {
		out.GatewayIPv6 = n.Gateway6.String()
	}
	return out, nil
}

func (d *Driver) endpointInfo(r *http.Request) (any, error) {
	var req endpointRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ep, err := d.mgr.Endpoint(req.EndpointID)
	if err != nil {
		return nil, err
	}
	ports := []portBinding{}
	for _, p := range ep.Ports {
		proto := 6
		if p.Proto == "udp" {
			proto = 17
		}
		ports = append(ports, portBinding{Proto: proto, IP: ep.IP.String(), Port: p.Port, HostIP: p.HostIP.String(), HostPort: p.HostPort, HostPortEnd: p.HostPort})
	}
	return endpointInfoResponse{Value: map[string]any{optMACAddress: ep.MAC, optPortMap: ports,
		"bpfnet.endpoint": ep.Name, "bpfnet.host_interface": ep.HostIf}}, nil
}

// programConnectivity publishes the container's ports (`docker run -p`),
// which Docker leaves entirely to a remote driver.
func (d *Driver) programConnectivity(r *http.Request) (any, error) {
	var req connectivityRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	reqs, err := portRequests(req.Options[optPortMap])
	if err != nil {
		return nil, err
	}
	_, err = d.mgr.PublishPorts(r.Context(), req.EndpointID, reqs)
	return nil, err
}

func (d *Driver) revokeConnectivity(r *http.Request) (any, error) {
	var req endpointRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	_, err := d.mgr.PublishPorts(r.Context(), req.EndpointID, nil)
	if network.KindOf(err) == network.KindNotFound {
		return nil, nil
	}
	return nil, err
}

// portRequests reads Docker's port map (a JSON list of PortBinding).
func portRequests(raw any) ([]network.PortRequest, error) {
	if raw == nil {
		return nil, nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	var bindings []portBinding
	if err := json.Unmarshal(b, &bindings); err != nil {
		return nil, invalid("port map: %v", err)
	}
	// Docker lists a wildcard binding twice, for 0.0.0.0 and for ::;
	// bpfnet's 0.0.0.0 already covers both families.
	wildcard4 := map[portBinding]bool{}
	for _, pb := range bindings {
		if pb.HostIP == "" || pb.HostIP == "0.0.0.0" {
			pb.HostIP, pb.IP = "", ""
			wildcard4[pb] = true
		}
	}
	var out []network.PortRequest
	for _, pb := range bindings {
		pr := network.PortRequest{Port: pb.Port, HostPort: pb.HostPort, HostPortEnd: pb.HostPortEnd}
		switch pb.Proto {
		case 6:
			pr.Proto = "tcp"
		case 17:
			pr.Proto = "udp"
		default:
			return nil, invalid("cannot publish port %d: protocol %d (only tcp and udp)", pb.Port, pb.Proto)
		}
		if pb.HostIP != "" {
			a, err := netip.ParseAddr(pb.HostIP)
			if err != nil {
				return nil, invalid("host IP %q: %v", pb.HostIP, err)
			}
			twin := pb
			twin.HostIP, twin.IP = "", ""
			if a == netip.IPv6Unspecified() && wildcard4[twin] {
				continue // the IPv6 twin of a wildcard binding
			}
			pr.HostIP = a
		}
		out = append(out, pr)
	}
	return out, nil
}

// Serve serves the driver on l until ctx ends.
func (d *Driver) Serve(ctx context.Context, l net.Listener) error {
	return httpserve.Serve(ctx, l, d.Handler())
}
