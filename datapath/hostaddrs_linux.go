package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/internal/netlinksafe"
	"github.com/bpfnet/bpfnet/loader"
)

// hostAddrs keeps two maps in step with the host namespace's addresses:
// host_addrs (every IPv4 address of the host, which containers may only
// reach as the policy allows) and uplinks (each uplink's masquerade
// address). mu serialises the address watcher against start-up and
// network changes.
type hostAddrs struct {
	log     *slog.Logger
	coll    *loader.Collection
	uplinks []string

	mu sync.Mutex
}

func netipAddr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	return a, ok && ip.To4() != nil
}

// sync makes host_addrs hold the host's IPv4 addresses and uplinks the
// uplinks' masquerade addresses.
func (h *hostAddrs) sync() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.syncLocked()
}

func (h *hostAddrs) syncLocked() error {
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list host addresses: %w", err)
	}
	want := map[uint32]uint32{}
	for _, a := range addrs {
		if ip, ok := netipAddr(a.IP); ok {
			want[be32(ip)] = 1
		}
	}
	return errors.Join(syncMap(h.coll.HostAddrs, want), h.syncUplinks())
}

// add makes one address a host address now (a new network's gateway):
// the watcher would add it too, but only once the kernel's notification
// arrives, and until then containers of other networks would be refused
// the gateway.
func (h *hostAddrs) add(ip netip.Addr) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.coll.HostAddrs.Put(be32(ip), uint32(1)); err != nil {
		return fmt.Errorf("add %s to host addresses: %w", ip, err)
	}
	return nil
}

// syncUplinks puts each uplink's primary IPv4 address (the masquerade
// source, as MASQUERADE picks it) in the uplinks map (callers hold h.mu).
func (h *hostAddrs) syncUplinks() error {
	want := map[uint32]bpf.BpfnetUplinkInfo{}
	for _, name := range h.uplinks {
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue
		}
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("addresses of uplink %s: %w", name, err)
		}
		info := bpf.BpfnetUplinkInfo{}
		for _, a := range addrs {
			if ip, ok := netipAddr(a.IP); ok && a.Flags&unix.IFA_F_SECONDARY == 0 {
				info.Addr = be32(ip)
				break
			}
		}
		want[uint32(l.Attrs().Index)] = info
	}
	return syncMap(h.coll.Uplinks, want)
}

// isUplink reports whether ifindex is one of the uplinks.
func (h *hostAddrs) isUplink(ifindex int) bool {
	return slices.ContainsFunc(h.uplinks, func(name string) bool {
		l, err := netlink.LinkByName(name)
		return err == nil && l.Attrs().Index == ifindex
	})
}

// subscribe starts listening to the kernel's address notifications; watch
// applies them. They are two steps so that no address added between the
// daemon's start-up sync and the watch is missed.
func (h *hostAddrs) subscribe(ctx context.Context) (<-chan netlink.AddrUpdate, error) {
	ch := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) {
			if ctx.Err() == nil { // closing the socket at shutdown is no news
				h.log.Warn("address watch", "err", err)
			}
		}}); err != nil {
		close(done)
		return nil, fmt.Errorf("watch host addresses: %w", err)
	}
	go func() {
		<-ctx.Done()
		close(done)
	}()
	return ch, nil
}

// watch applies address notifications until ctx ends. A new address is
// one map update (and, on an uplink, its masquerade address); a removed
// one is a full resync, as another interface may hold the same address.
func (h *hostAddrs) watch(ctx context.Context, ch <-chan netlink.AddrUpdate) {
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-ch:
			if !ok {
				return
			}
			ip, v4 := netipAddr(u.LinkAddress.IP)
			if !v4 {
				continue
			}
			h.mu.Lock()
			var err error
			if u.NewAddr {
				err = h.coll.HostAddrs.Put(be32(ip), uint32(1))
				if h.isUplink(u.LinkIndex) {
					err = errors.Join(err, h.syncUplinks())
				}
			} else {
				err = h.syncLocked()
			}
			h.mu.Unlock()
			if err != nil {
				h.log.Error("sync host addresses", "err", err)
			}
		}
	}
}
