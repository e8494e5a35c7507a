package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Client talks to bpfnetd over its unix socket.
type Client struct {
	http   *http.Client
	socket string
}

// NewClient returns a client for host, given as "unix:///path" or a path.
func NewClient(host string) (*Client, error) {
	path := host
	if strings.Contains(host, "://") {
		u, err := url.Parse(host)
		if err != nil || u.Scheme != "unix" {
			return nil, fmt.Errorf("invalid host %q: want unix:///path/to/socket", host)
		}
		path = u.Path
	}
	if path == "" {
		path = DefaultSocket
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{http: &http.Client{Transport: tr}, socket: path}, nil
}

// Monitor streams drop events (of one network and/or endpoint when set)
// to fn until ctx ends or fn returns an error.
func (c *Client) Monitor(ctx context.Context, network, endpoint string, fn func(MonitorEvent) error) error {
	q := url.Values{}
	if network != "" {
		q.Set("network", network)
	}
	if endpoint != "" {
		q.Set("endpoint", endpoint)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://bpfnetd/v1/monitor?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach bpfnetd at %s (is it running?): %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return responseError(resp)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev MonitorEvent
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// StatusError is a request bpfnetd refused: its HTTP status says why
// (400 invalid, 404 not found, 409 conflict, 500 the daemon failed) and
// Message is the daemon's.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// IsNotFound reports whether err is bpfnetd's "not found".
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status == http.StatusNotFound
}

// responseError turns a non-2xx reply into a *StatusError with its message.
func responseError(resp *http.Response) error {
	var e Error
	if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Message != "" {
		return &StatusError{Status: resp.StatusCode, Message: e.Message}
	}
	return &StatusError{Status: resp.StatusCode, Message: "bpfnetd: " + resp.Status}
}

// NewJSONRequest is an HTTP request whose body is in as JSON (none when
// in is nil).
func NewJSONRequest(ctx context.Context, method, url string, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// do sends a request and decodes the JSON reply into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	req, err := NewJSONRequest(ctx, method, "http://bpfnetd"+path, in)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach bpfnetd at %s (is it running?): %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return responseError(resp)
	}
	if out == nil {
		return nil
	}
	if s, ok := out.(*string); ok {
		b, err := io.ReadAll(resp.Body)
		*s = string(b)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, "GET", "/v1/status", nil, &s)
}

// Version is the daemon's build.
func (c *Client) Version(ctx context.Context) (Version, error) {
	var out Version
	err := c.do(ctx, "GET", "/v1/version", nil, &out)
	return out, err
}

// NAT lists the eBPF datapath's translations.
func (c *Client) NAT(ctx context.Context) ([]NATEntry, error) {
	var out []NATEntry
	return out, c.do(ctx, "GET", "/v1/nat", nil, &out)
}

// Networks lists all networks.
func (c *Client) Networks(ctx context.Context) ([]NetworkInspect, error) {
	var out []NetworkInspect
	return out, c.do(ctx, "GET", "/v1/networks", nil, &out)
}

// CreateNetwork creates a network.
func (c *Client) CreateNetwork(ctx context.Context, req CreateNetworkRequest) (NetworkInspect, error) {
	var out NetworkInspect
	return out, c.do(ctx, "POST", "/v1/networks", req, &out)
}

// Network inspects one network by name or id.
func (c *Client) Network(ctx context.Context, ref string) (NetworkInspect, error) {
	var out NetworkInspect
	return out, c.do(ctx, "GET", "/v1/networks/"+url.PathEscape(ref), nil, &out)
}

// RemoveNetwork removes a network by name or id.
func (c *Client) RemoveNetwork(ctx context.Context, ref string) error {
	return c.do(ctx, "DELETE", "/v1/networks/"+url.PathEscape(ref), nil, nil)
}

// Endpoints lists endpoints, of one network when network is set.
func (c *Client) Endpoints(ctx context.Context, network string) ([]Endpoint, error) {
	var out []Endpoint
	return out, c.do(ctx, "GET", "/v1/endpoints?network="+url.QueryEscape(network), nil, &out)
}

// ContainerEndpoints lists a container's endpoints (by the container id it
// was created with) on a network, without counters.
func (c *Client) ContainerEndpoints(ctx context.Context, network, containerID string) ([]Endpoint, error) {
	var out []Endpoint
	q := url.Values{"network": {network}, "container": {containerID}}
	return out, c.do(ctx, "GET", "/v1/endpoints?"+q.Encode(), nil, &out)
}

// CreateEndpoint creates an endpoint.
func (c *Client) CreateEndpoint(ctx context.Context, req CreateEndpointRequest) (Endpoint, error) {
	var out Endpoint
	return out, c.do(ctx, "POST", "/v1/endpoints", req, &out)
}

// Endpoint inspects one endpoint by name or id.
func (c *Client) Endpoint(ctx context.Context, ref string) (Endpoint, error) {
	var out Endpoint
	return out, c.do(ctx, "GET", "/v1/endpoints/"+url.PathEscape(ref), nil, &out)
}

// RemoveEndpoint removes an endpoint by name or id.
func (c *Client) RemoveEndpoint(ctx context.Context, ref string) error {
	return c.do(ctx, "DELETE", "/v1/endpoints/"+url.PathEscape(ref), nil, nil)
}

// Locate finds the host side of a container interface.
func (c *Client) Locate(ctx context.Context, req LocateRequest) (Location, error) {
	var out Location
	return out, c.do(ctx, "POST", "/v1/locate", req, &out)
}

// CheckEndpoint asks the daemon whether an endpoint is whole: its veth
// pair, the container side's address and routes, and the datapath's hold
// on it. The error says what is missing.
func (c *Client) CheckEndpoint(ctx context.Context, ref string) error {
	return c.do(ctx, "GET", "/v1/endpoints/"+url.PathEscape(ref)+"/check", nil, nil)
}

// CompatRender returns the iptables-save text of the compat rendering,
// or with ipv6 its ip6tables-save text.
func (c *Client) CompatRender(ctx context.Context, ipv6 bool) (string, error) {
	var out string
	path := "/v1/compat/render"
	if ipv6 {
		path += "?family=ipv6"
	}
	return out, c.do(ctx, "GET", path, nil, &out)
}
