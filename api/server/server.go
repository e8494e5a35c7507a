// Package server serves bpfnetd's API (package api's types, over HTTP on
// a unix socket) for a network manager and the enforcer it runs: a thin
// layer that asks the enforcer for the optional abilities it has
// (counters, drop events, a translation table, a description) and holds
// no business logic of its own.
package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/httpserve"
	"github.com/bpfnet/bpfnet/internal/version"
	"github.com/bpfnet/bpfnet/network"
)

// Info is what only the daemon knows: its build and configuration.
type Info struct {
	Version        string
	DatapathReason string
	StateDir       string
	// Uplinks returns the uplinks now (they follow the default routes
	// unless --uplink names them).
	Uplinks  func() []string
	Warnings []string
	// Cgroup is the cgroup v2 directory of the socket programs, when the
	// datapath has them.
	Cgroup string
	// Render is the iptables rendering of a state (compat render), or
	// with ipv6 its ip6tables rendering.
	Render func(v network.View, ipv6 bool) string
}

// Server serves the API of a manager and its enforcer.
type Server struct {
	log   *slog.Logger
	mgr   *network.Manager
	enf   network.Enforcer
	info  Info
	drops *fanout // nil when the enforcer reports no drops
}

// New returns a server; Serve runs it.
func New(log *slog.Logger, mgr *network.Manager, enf network.Enforcer, info Info) *Server {
	return &Server{log: log, mgr: mgr, enf: enf, info: info}
}

// Serve serves the API on l until ctx ends; the enforcer's drop events,
// if it has any, are read meanwhile for `bpfnet monitor`.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if src, ok := s.enf.(network.DropSource); ok {
		events, err := src.Drops(ctx)
		if err != nil {
			return err
		}
		s.drops = newFanout(events)
	}
	return httpserve.Serve(ctx, l, s.Handler())
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(w, s.status(), nil) })
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) { reply(w, version.API(), nil) })
	mux.HandleFunc("GET /v1/nat", s.nat)
	mux.HandleFunc("GET /v1/networks", s.listNetworks)
	mux.HandleFunc("POST /v1/networks", s.createNetwork)
	mux.HandleFunc("GET /v1/networks/{ref}", s.inspectNetwork)
	mux.HandleFunc("DELETE /v1/networks/{ref}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, s.mgr.RemoveNetwork(r.Context(), r.PathValue("ref")))
	})
	mux.HandleFunc("GET /v1/endpoints", s.listEndpoints)
	mux.HandleFunc("POST /v1/endpoints", s.createEndpoint)
	mux.HandleFunc("GET /v1/endpoints/{ref}", s.inspectEndpoint)
	mux.HandleFunc("GET /v1/endpoints/{ref}/check", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, s.mgr.CheckEndpoint(r.PathValue("ref")))
	})
	mux.HandleFunc("DELETE /v1/endpoints/{ref}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, s.mgr.RemoveEndpoint(r.Context(), r.PathValue("ref")))
	})
	mux.HandleFunc("POST /v1/locate", s.locate)
	mux.HandleFunc("GET /v1/monitor", s.monitor)
	mux.HandleFunc("GET /v1/compat/render", func(w http.ResponseWriter, r *http.Request) {
		family := r.URL.Query().Get("family")
		if family != "" && family != "ipv4" && family != "ipv6" {
			writeError(w, http.StatusBadRequest, fmt.Errorf("invalid family %q: want ipv4 or ipv6", family))
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.info.Render != nil {
			fmt.Fprint(w, s.info.Render(s.mgr.View(), family == "ipv6"))
		}
	})
	return mux
}

func (s *Server) status() api.Status {
	v := s.mgr.View()
	st := api.Status{Version: s.info.Version, Datapath: s.enf.Name(), DatapathReason: s.info.DatapathReason,
		StateDir: s.info.StateDir, Uplinks: s.info.Uplinks(), Warnings: s.info.Warnings, Cgroup: s.info.Cgroup,
		Networks: len(v.Networks), Endpoints: len(v.Endpoints), EndpointsReleased: s.mgr.Released()}
	st.SpareVeths, st.SparesTaken = s.mgr.Spares()
	if d, ok := s.enf.(network.Describer); ok {
		d.Describe(&st)
	}
	if l, ok := s.enf.(network.AttachmentLister); ok {
		st.Attachments = l.Attachments()
	}
	return st
}

func (s *Server) nat(w http.ResponseWriter, r *http.Request) {
	l, ok := s.enf.(network.NATTable)
	if !ok {
		reply(w, nil, &network.Error{Kind: network.KindNotFound, Err: fmt.Errorf("the %s datapath keeps no translation table (the iptables datapath leaves NAT to the kernel: conntrack -L)", s.enf.Name())})
		return
	}
	entries, err := l.NATEntries()
	if entries == nil {
		entries = []api.NATEntry{}
	}
	reply(w, entries, err)
}

func (s *Server) listNetworks(w http.ResponseWriter, r *http.Request) {
	v := s.mgr.View()
	out := []api.NetworkInspect{}
	for _, n := range v.Networks {
		out = append(out, Inspect(*n, v.Endpoints))
	}
	reply(w, out, nil)
}

func (s *Server) createNetwork(w http.ResponseWriter, r *http.Request) {
	var req api.CreateNetworkRequest
	if !decode(w, r, &req) {
		return
	}
	n, err := s.mgr.CreateNetwork(r.Context(), req)
	if err != nil {
		reply(w, nil, err)
		return
	}
	writeJSON(w, http.StatusCreated, Inspect(n, nil))
}

func (s *Server) inspectNetwork(w http.ResponseWriter, r *http.Request) {
	n, err := s.mgr.Network(r.PathValue("ref"))
	if err != nil {
		reply(w, nil, err)
		return
	}
	reply(w, Inspect(n, s.mgr.View().Endpoints), nil)
}

// counts reads the endpoint counters once per request; a failure only
// leaves them out.
func (s *Server) counts() map[string]api.EndpointCounters {
	c, ok := s.enf.(network.Counter)
	if !ok {
		return nil
	}
	counts, err := c.Counts(s.mgr.View())
	if err != nil {
		s.log.Error("read endpoint counters", "err", err)
	}
	return counts.Endpoints
}

func (s *Server) endpointView(ep network.Endpoint, counters map[string]api.EndpointCounters) api.Endpoint {
	n, _ := s.mgr.Network(ep.NetworkID)
	out := EndpointOf(ep, n)
	if c, ok := counters[ep.ID]; ok {
		out.Counters = &c
	}
	return out
}

// listEndpoints lists the endpoints of ?network= (all without it). With
// ?container=, only that container's, and without counters: a runtime's
// lookup (every CNI verb) must not read every endpoint's counters, which
// would make each pod start grow with the host's endpoints.
func (s *Server) listEndpoints(w http.ResponseWriter, r *http.Request) {
	eps, err := s.mgr.Endpoints(r.URL.Query().Get("network"))
	container := r.URL.Query().Get("container")
	var counters map[string]api.EndpointCounters
	if container == "" {
		counters = s.counts()
	}
	out := []api.Endpoint{}
	for _, ep := range eps {
		if container == "" || ep.ContainerID == container {
			out = append(out, s.endpointView(ep, counters))
		}
	}
	reply(w, out, err)
}

func (s *Server) createEndpoint(w http.ResponseWriter, r *http.Request) {
	var req api.CreateEndpointRequest
	if !decode(w, r, &req) {
		return
	}
	ep, err := s.mgr.CreateEndpoint(r.Context(), req)
	if err != nil {
		reply(w, nil, err)
		return
	}
	// A new endpoint has no traffic yet; reading every endpoint's counters
	// would make creation grow with the number of endpoints and networks.
	writeJSON(w, http.StatusCreated, s.endpointView(ep, nil))
}

func (s *Server) inspectEndpoint(w http.ResponseWriter, r *http.Request) {
	ep, err := s.mgr.Endpoint(r.PathValue("ref"))
	if err != nil {
		reply(w, nil, err)
		return
	}
	reply(w, s.endpointView(ep, s.counts()), nil)
}

func (s *Server) locate(w http.ResponseWriter, r *http.Request) {
	var req api.LocateRequest
	if !decode(w, r, &req) {
		return
	}
	loc, err := s.mgr.Locate(req.NetNS, req.PID, req.IfName)
	reply(w, loc, err)
}

// monitor streams drop events as JSON lines, filtered by ?network= and
// ?endpoint= (names or ids), until the client goes away.
func (s *Server) monitor(w http.ResponseWriter, r *http.Request) {
	if s.drops == nil {
		reply(w, nil, &network.Error{Kind: network.KindNotFound, Err: fmt.Errorf("the %s datapath sends no drop events (the eBPF datapath does)", s.enf.Name())})
		return
	}
	var netID, epID string
	if ref := r.URL.Query().Get("network"); ref != "" {
		n, err := s.mgr.Network(ref)
		if err != nil {
			reply(w, nil, err)
			return
		}
		netID = n.ID
	}
	if ref := r.URL.Query().Get("endpoint"); ref != "" {
		ep, err := s.mgr.Endpoint(ref)
		if err != nil {
			reply(w, nil, err)
			return
		}
		epID = ep.ID
	}
	events := s.drops.subscribe(r.Context())
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for ev := range events {
		if (netID != "" && ev.NetworkID != netID) || (epID != "" && ev.EndpointID != epID) {
			continue
		}
		if enc.Encode(s.describe(ev)) != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// describe names the endpoint, network and interface of a drop event.
func (s *Server) describe(ev network.DropEvent) api.MonitorEvent {
	out := api.MonitorEvent{Time: ev.Time, Direction: ev.Direction, Reason: ev.Reason, Proto: ev.Proto,
		Src: hostPort(ev.Proto, ev.Src), Dst: hostPort(ev.Proto, ev.Dst), ICMPType: ev.ICMPType, Length: ev.Length}
	if ep, err := s.mgr.Endpoint(ev.EndpointID); ev.EndpointID != "" && err == nil {
		out.Endpoint, out.Interface = ep.Name, ep.HostIf
		ev.NetworkID = ep.NetworkID
	}
	if n, err := s.mgr.Network(ev.NetworkID); ev.NetworkID != "" && err == nil {
		out.Network = n.Name
		if out.Interface == "" {
			out.Interface = n.Bridge
		}
	}
	return out
}

// hostPort is a drop's address as the monitor shows it: with its port
// for TCP and UDP, alone otherwise, nothing when the packet had none.
func hostPort(proto string, a netip.AddrPort) string {
	switch {
	case !a.Addr().IsValid():
		return ""
	case proto == "tcp" || proto == "udp":
		return a.String()
	}
	return a.Addr().String()
}

// decode reads a JSON body, rejecting unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("invalid request body: %w", err))
		return false
	}
	return true
}

// reply writes v as JSON, or err with the status its kind maps to.
func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		status := map[network.Kind]int{
			network.KindInvalid:  http.StatusBadRequest,
			network.KindNotFound: http.StatusNotFound,
			network.KindConflict: http.StatusConflict,
		}[network.KindOf(err)]
		if status == 0 {
			status = http.StatusInternalServerError
		}
		writeError(w, status, err)
		return
	}
	if v == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, api.Error{Message: err.Error()})
}

// writeJSON writes v as the response. Once the header is out there is
// nobody to tell of an error (the client went away).
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
