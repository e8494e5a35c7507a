package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/bpfnet/bpfnet/network"
)

// Server serves the API for a network manager.
type Server struct {
	log *slog.Logger
	mgr *network.Manager
	Daemon
}

// Daemon supplies what only the daemon knows.
type Daemon struct {
	// Status is the daemon's configuration and datapath.
	Status func() Status
	// Render is the compat rendering of the current state.
	Render func() string
	// NAT lists the current translations; nil when the datapath has none.
	NAT func() ([]NATEntry, error)
	// Counters returns every endpoint's counters by endpoint id.
	Counters func() (map[string]EndpointCounters, error)
	// Monitor subscribes to drop events until ctx ends; nil when the
	// datapath has none.
	Monitor func(ctx context.Context) (<-chan MonitorEvent, error)
}

// NewServer returns the API handler.
func NewServer(log *slog.Logger, mgr *network.Manager, d Daemon) *Server {
	return &Server{log: log, mgr: mgr, Daemon: d}
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(w, s.Status(), nil) })
	mux.HandleFunc("GET /v1/nat", func(w http.ResponseWriter, r *http.Request) {
		if s.NAT == nil {
			reply(w, nil, &network.Error{Kind: network.KindNotFound, Err: fmt.Errorf("the %s datapath keeps no translation table (the iptables datapath leaves NAT to the kernel: conntrack -L)", s.Status().Datapath)})
			return
		}
		entries, err := s.NAT()
		if entries == nil {
			entries = []NATEntry{}
		}
		reply(w, entries, err)
	})
	mux.HandleFunc("GET /v1/networks", s.listNetworks)
	mux.HandleFunc("POST /v1/networks", s.createNetwork)
	mux.HandleFunc("GET /v1/networks/{ref}", s.inspectNetwork)
	mux.HandleFunc("DELETE /v1/networks/{ref}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, s.mgr.RemoveNetwork(r.Context(), r.PathValue("ref")))
	})
	mux.HandleFunc("GET /v1/endpoints", s.listEndpoints)
	mux.HandleFunc("POST /v1/endpoints", s.createEndpoint)
	mux.HandleFunc("GET /v1/endpoints/{ref}", s.inspectEndpoint)
	mux.HandleFunc("DELETE /v1/endpoints/{ref}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, s.mgr.RemoveEndpoint(r.Context(), r.PathValue("ref")))
	})
	mux.HandleFunc("POST /v1/locate", s.locate)
	mux.HandleFunc("GET /v1/monitor", s.monitor)
	mux.HandleFunc("GET /v1/compat/render", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, s.Render())
	})
	return mux
}

func (s *Server) listNetworks(w http.ResponseWriter, r *http.Request) {
	eps, _ := s.mgr.Endpoints("")
	out := []NetworkInspect{}
	for _, n := range s.mgr.Networks() {
		out = append(out, Inspect(n, eps))
	}
	reply(w, out, nil)
}

func (s *Server) createNetwork(w http.ResponseWriter, r *http.Request) {
	var req network.CreateNetworkRequest
	if !decode(w, r, &req) {
		return
	}
	n, err := s.mgr.CreateNetwork(r.Context(), req)
	if err != nil {
		reply(w, nil, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(Inspect(n, nil))
}

func (s *Server) inspectNetwork(w http.ResponseWriter, r *http.Request) {
	n, err := s.mgr.Network(r.PathValue("ref"))
	if err != nil {
		reply(w, nil, err)
		return
	}
	eps, _ := s.mgr.Endpoints(n.ID)
	reply(w, Inspect(n, eps), nil)
}

func (s *Server) endpointView(ep network.Endpoint, counters map[string]EndpointCounters) Endpoint {
	out := Endpoint{Endpoint: ep}
	if n, err := s.mgr.Network(ep.NetworkID); err == nil {
		out.Network, out.Subnet, out.Gateway = n.Name, n.Subnet.String(), n.Gateway.String()
	}
	if c, ok := counters[ep.ID]; ok {
		out.Counters = &c
	}
	return out
}

// counters reads the endpoint counters once per request; a failure only
// leaves them out.
func (s *Server) counters() map[string]EndpointCounters {
	if s.Counters == nil {
		return nil
	}
	c, err := s.Counters()
	if err != nil {
		s.log.Error("read endpoint counters", "err", err)
	}
	return c
}

func (s *Server) listEndpoints(w http.ResponseWriter, r *http.Request) {
	eps, err := s.mgr.Endpoints(r.URL.Query().Get("network"))
	out := []Endpoint{}
	counters := s.counters()
	for _, ep := range eps {
		out = append(out, s.endpointView(ep, counters))
	}
	reply(w, out, err)
}

// monitor streams drop events as JSON lines, filtered by ?network= and
// ?endpoint= (names or ids), until the client goes away.
func (s *Server) monitor(w http.ResponseWriter, r *http.Request) {
	if s.Monitor == nil {
		reply(w, nil, &network.Error{Kind: network.KindNotFound, Err: fmt.Errorf("the %s datapath sends no drop events (the eBPF datapath does)", s.Status().Datapath)})
		return
	}
	var netName, epName string
	if ref := r.URL.Query().Get("network"); ref != "" {
		n, err := s.mgr.Network(ref)
		if err != nil {
			reply(w, nil, err)
			return
		}
		netName = n.Name
	}
	if ref := r.URL.Query().Get("endpoint"); ref != "" {
		ep, err := s.mgr.Endpoint(ref)
		if err != nil {
			reply(w, nil, err)
			return
		}
		epName = ep.Name
	}
	events, err := s.Monitor(r.Context())
	if err != nil {
		reply(w, nil, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for ev := range events {
		if (netName != "" && ev.Network != netName) || (epName != "" && ev.Endpoint != epName) {
			continue
		}
		if enc.Encode(ev) != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func (s *Server) createEndpoint(w http.ResponseWriter, r *http.Request) {
	var req network.CreateEndpointRequest
	if !decode(w, r, &req) {
		return
	}
	ep, err := s.mgr.CreateEndpoint(r.Context(), req)
	if err != nil {
		reply(w, nil, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
	// A new endpoint has no traffic yet; reading every endpoint's counters
	// (iptables -L on all DROP rules, or the whole counters map) would
	// make creation grow with the number of endpoints and networks.
	json.NewEncoder(w).Encode(s.endpointView(ep, nil))
}

func (s *Server) inspectEndpoint(w http.ResponseWriter, r *http.Request) {
	ep, err := s.mgr.Endpoint(r.PathValue("ref"))
	if err != nil {
		reply(w, nil, err)
		return
	}
	reply(w, s.endpointView(ep, s.counters()), nil)
}

func (s *Server) locate(w http.ResponseWriter, r *http.Request) {
	var req LocateRequest
	if !decode(w, r, &req) {
		return
	}
	loc, err := s.mgr.Locate(req.NetNS, req.PID, req.IfName)
	reply(w, loc, err)
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
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(Error{Message: err.Error()})
}

// CheckSocketFree returns an error when a live server answers on the
// socket at path (another daemon).
func CheckSocketFree(path string) error {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another bpfnetd is listening on %s", path)
	}
	return nil
}

// Listen opens the unix socket at path with mode 0660 (owner and group
// only: whoever can write to it controls the host's networking). A stale
// socket file left by a dead daemon is replaced; a live one is an error.
// Closing the listener removes the socket file.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := CheckSocketFree(path); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return l, nil
}

// Serve serves h on l until ctx ends.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
