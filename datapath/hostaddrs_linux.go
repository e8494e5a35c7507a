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

// hostAddrs keeps three maps in step with the host namespace's addresses:
// host_addrs and host_addrs6 (every IPv4 address of the host, and every
// IPv6 one but link-local, which containers may only reach as the policy
// allows) and uplinks (each uplink's masquerade addresses). mu serialises
// the address watcher against start-up and network changes.
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

// hostAddr6 returns an IPv6 address for host_addrs6: any but link-local
// ones, which the programs recognise by their prefix.
func hostAddr6(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a, ok && ip.To4() == nil && a.Is6() && !a.IsLinkLocalUnicast()
}

// sync makes host_addrs and host_addrs6 hold the host's addresses and
// uplinks the uplinks' masquerade addresses.
func (h *hostAddrs) sync() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.syncLocked()
}

func (h *hostAddrs) syncLocked() error {
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list host addresses: %w", err)
	}
	want, want6 := map[uint32]uint32{}, map[bpf.BpfnetIn6Key]uint32{}
	for _, a := range addrs {
		if ip, ok := netipAddr(a.IP); ok {
			want[be32(ip)] = 1
		} else if ip, ok := hostAddr6(a.IP); ok {
			want6[in6(ip)] = 1
		}
	}
	return errors.Join(syncMap(h.coll.HostAddrs, want), syncMap(h.coll.HostAddrs6, want6), h.syncUplinks())
}

// add makes one address (IPv4 or IPv6) a host address now (a new
// network's gateway): the watcher would add it too, but only once the
// kernel's notification arrives, and until then containers of other
// networks would be refused the gateway.
func (h *hostAddrs) add(ip netip.Addr) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var err error
	if ip.Is4() {
		err = h.coll.HostAddrs.Put(be32(ip), uint32(1))
	} else {
		err = h.coll.HostAddrs6.Put(in6(ip), uint32(1))
	}
	if err != nil {
		return fmt.Errorf("add %s to host addresses: %w", ip, err)
	}
	return nil
}

// syncUplinks puts each uplink's masquerade addresses in the uplinks map
// (callers hold h.mu): its primary IPv4 address, as MASQUERADE picks it,
// and its first usable global IPv6 address.
func (h *hostAddrs) syncUplinks() error {
	want := map[uint32]bpf.BpfnetUplinkInfo{}
	for _, name := range h.uplinks {
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue
		}
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("addresses of uplink %s: %w", name, err)
		}
		info := bpf.BpfnetUplinkInfo{}
		var have, have6 bool
		for _, a := range addrs {
			if ip, ok := netipAddr(a.IP); ok && !have && a.Flags&unix.IFA_F_SECONDARY == 0 {
				info.Addr, have = be32(ip), true
			}
			unusable := unix.IFA_F_DEPRECATED | unix.IFA_F_TENTATIVE | unix.IFA_F_DADFAILED
			if ip, ok := hostAddr6(a.IP); ok && !have6 && ip.IsGlobalUnicast() && a.Flags&unusable == 0 {
				info.Addr6, have6 = in6(ip), true
			}
		}
		want[uint32(l.Attrs().Index)] = info
	}
	return syncMap(h.coll.Uplinks, want)
}

// setUplinks makes names the uplinks whose addresses the uplinks map holds.
func (h *hostAddrs) setUplinks(names []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.uplinks = slices.Clone(names)
	return h.syncUplinks()
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
			ip6, v6 := hostAddr6(u.LinkAddress.IP)
			if !v4 && !v6 {
				continue
			}
			h.mu.Lock()
			var err error
			if u.NewAddr {
				if v4 {
					err = h.coll.HostAddrs.Put(be32(ip), uint32(1))
				} else {
					err = h.coll.HostAddrs6.Put(in6(ip6), uint32(1))
				}
				// An IPv6 address becomes usable (DAD done) in a later
				// notification of the same address: the uplink is looked
				// at again each time.
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
