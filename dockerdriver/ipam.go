package dockerdriver

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"github.com/bpfnet/bpfnet/network"
)

// Docker's remote IPAM protocol (libnetwork docs/ipam.md): with
// `--ipam-driver bpfnet`, bpfnet's allocator picks the network's pool and
// the containers' addresses, so networks made by Docker and by the CLI
// share one allocator (no overlapping pools, no address twice).

const gatewayRequest = "com.docker.network.gateway" // Options["RequestAddressType"]

type requestPoolRequest struct {
	AddressSpace string
	Pool         string
	SubPool      string
	Options      map[string]string
	V6           bool
}

type requestPoolResponse struct {
	PoolID string
	Pool   string
	Data   map[string]string
}

type poolRequest struct {
	PoolID string
}

type requestAddressRequest struct {
	PoolID  string
	Address string
	Options map[string]string
}

type requestAddressResponse struct {
	Address string
	Data    map[string]string
}

type releaseAddressRequest struct {
	PoolID  string
	Address string
}

// ipam keeps what it handed out and Docker has not yet turned into a
// network or an endpoint (or released): pools, and addresses by pool. It
// is in memory: after a restart the model's networks and endpoints are
// what counts, and Docker does not ask again for what it holds.
type ipam struct {
	mgr *network.Manager

	mu    sync.Mutex
	pools map[netip.Prefix]bool
	addrs map[netip.Prefix]map[netip.Addr]bool
}

// A pool's id names it, so that nothing needs remembering to read it:
// "bpfnet/SUBNET" or "bpfnet/SUBNET/RANGE" (RANGE: --ip-range).
func poolID(pool, sub netip.Prefix) string {
	if sub.IsValid() {
		return "bpfnet/" + pool.String() + "|" + sub.String()
	}
	return "bpfnet/" + pool.String()
}

func parsePoolID(id string) (pool, sub netip.Prefix, err error) {
	rest, ok := strings.CutPrefix(id, "bpfnet/")
	p, s, hasSub := strings.Cut(rest, "|")
	if pool, err = netip.ParsePrefix(p); !ok || err != nil {
		return pool, sub, invalid("unknown pool %q", id)
	}
	if hasSub {
		if sub, err = netip.ParsePrefix(s); err != nil {
			return pool, sub, invalid("unknown pool %q", id)
		}
	}
	return pool, sub, nil
}

func (d *Driver) ipamRoutes(route func(string, func(*http.Request) (any, error))) {
	m := &ipam{mgr: d.mgr, pools: map[netip.Prefix]bool{}, addrs: map[netip.Prefix]map[netip.Addr]bool{}}
	route("IpamDriver.GetCapabilities", func(*http.Request) (any, error) {
		return map[string]bool{"RequiresMACAddress": false, "RequiresRequestReplay": false}, nil
	})
	route("IpamDriver.GetDefaultAddressSpaces", func(*http.Request) (any, error) {
		return map[string]string{"LocalDefaultAddressSpace": "bpfnet-local", "GlobalDefaultAddressSpace": "bpfnet-global"}, nil
	})
	route("IpamDriver.RequestPool", m.requestPool)
	route("IpamDriver.ReleasePool", m.releasePool)
	route("IpamDriver.RequestAddress", m.requestAddress)
	route("IpamDriver.ReleaseAddress", m.releaseAddress)
}

func (m *ipam) requestPool(r *http.Request) (any, error) {
	var req requestPoolRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	family, example := "IPv4", "10.1.0.0/24"
	if req.V6 {
		family, example = "IPv6", "fd00:1::/64"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var pool, sub netip.Prefix
	var err error
	switch {
	case req.Pool == "" && req.SubPool != "":
		return nil, invalid("an ip-range needs a subnet")
	case req.Pool == "" && req.V6:
		if pool, err = m.mgr.FreeSubnet6(slicesOf(m.pools)); err != nil {
			return nil, err
		}
	case req.Pool == "":
		if pool, err = m.mgr.FreeSubnet(slicesOf(m.pools)); err != nil {
			return nil, err
		}
	default:
		if pool, err = netip.ParsePrefix(req.Pool); err != nil || pool.Addr().Is6() != req.V6 || pool.Addr().Is4In6() || pool != pool.Masked() {
			return nil, invalid("invalid subnet %q: want an %s prefix such as %s", req.Pool, family, example)
		}
		for p := range m.pools {
			if p.Overlaps(pool) {
				return nil, &network.Error{Kind: network.KindConflict, Err: fmt.Errorf("subnet %s overlaps %s, being created", pool, p)}
			}
		}
		if err := m.mgr.CheckSubnet(pool); err != nil {
			return nil, err
		}
		if req.SubPool != "" {
			if sub, err = netip.ParsePrefix(req.SubPool); err != nil || !pool.Contains(sub.Addr()) || sub.Bits() < pool.Bits() {
				return nil, invalid("ip-range %q is not inside subnet %s", req.SubPool, pool)
			}
		}
	}
	m.pools[pool] = true
	return requestPoolResponse{PoolID: poolID(pool, sub), Pool: pool.String(), Data: map[string]string{}}, nil
}

func slicesOf(m map[netip.Prefix]bool) []netip.Prefix {
	var out []netip.Prefix
	for p := range m {
		out = append(out, p)
	}
	return out
}

func (m *ipam) releasePool(r *http.Request) (any, error) {
	var req poolRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	pool, _, err := parsePoolID(req.PoolID)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pools, pool)
	delete(m.addrs, pool)
	return nil, nil
}

// requestAddress gives the gateway (the one asked for, else the first
// address of the range) or a container's address (the one asked for if
// free, else the first free of the range).
func (m *ipam) requestAddress(r *http.Request) (any, error) {
	var req requestAddressRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	pool, sub, err := parsePoolID(req.PoolID)
	if err != nil {
		return nil, err
	}
	var want netip.Addr
	if req.Address != "" {
		if want, err = netip.ParseAddr(req.Address); err != nil || !pool.Contains(want) {
			return nil, invalid("address %q is not in %s", req.Address, pool)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	handed := m.addrs[pool]
	if handed == nil {
		handed = map[netip.Addr]bool{}
		m.addrs[pool] = handed
	}
	if req.Options["RequestAddressType"] == gatewayRequest {
		if !want.IsValid() {
			if want, err = network.FirstAddress(pool, sub); err != nil {
				return nil, invalid("%v", err)
			}
		}
		handed[want] = true
		return requestAddressResponse{Address: netip.PrefixFrom(want, pool.Bits()).String()}, nil
	}
	if want.IsValid() {
		// The one asked for (an aux address, or --ip): if nothing has it.
		if handed[want] || m.mgr.AddressInUse(pool, want) {
			return nil, &network.Error{Kind: network.KindConflict, Err: fmt.Errorf("address %s is already in use", want)}
		}
	} else if want, err = m.mgr.FreeAddress(pool, sub, handed); err != nil {
		return nil, err
	}
	handed[want] = true
	return requestAddressResponse{Address: netip.PrefixFrom(want, pool.Bits()).String()}, nil
}

func (m *ipam) releaseAddress(r *http.Request) (any, error) {
	var req releaseAddressRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	pool, _, err := parsePoolID(req.PoolID)
	if err != nil {
		return nil, err
	}
	a, err := netip.ParseAddr(req.Address)
	if err != nil {
		return nil, invalid("invalid address %q", req.Address)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.addrs[pool], a)
	return nil, nil
}
