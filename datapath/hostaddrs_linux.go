package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/bpf"
)

func netipAddr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	return a, ok && ip.To4() != nil
}

// syncHostAddrs makes host_addrs hold the IPv4 addresses of the host
// namespace (callers hold e.mu).
func (e *Enforcer) syncHostAddrs() error {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list host addresses: %w", err)
	}
	want := map[uint32]uint32{}
	for _, a := range addrs {
		if ip, ok := netipAddr(a.IP); ok {
			want[be32(ip)] = 1
		}
	}
	return errors.Join(syncMap(e.coll.HostAddrs, want), e.syncUplinks())
}

// syncUplinks puts each uplink's primary IPv4 address (the masquerade
// source, as MASQUERADE picks it) in the uplinks map (callers hold e.mu).
func (e *Enforcer) syncUplinks() error {
	want := map[uint32]bpf.BpfnetUplinkInfo{}
	for _, name := range e.cfg.Uplinks {
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
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
	return syncMap(e.coll.Uplinks, want)
}

// isUplink reports whether ifindex is one of the configured uplinks.
func (e *Enforcer) isUplink(ifindex int) bool {
	for _, name := range e.cfg.Uplinks {
		if l, err := netlink.LinkByName(name); err == nil && l.Attrs().Index == ifindex {
			return true
		}
	}
	return false
}

// WatchHostAddrs keeps host_addrs in step with the kernel's address list
// until ctx ends.
func (e *Enforcer) WatchHostAddrs(ctx context.Context) error {
	ch := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) {
			if ctx.Err() == nil { // closing the socket at shutdown is no news
				e.log.Warn("address watch", "err", err)
			}
		}}); err != nil {
		close(done)
		return fmt.Errorf("watch host addresses: %w", err)
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-ch:
				if !ok {
					return
				}
				// A new address is one map update (and, on an uplink, its
				// masquerade address); a removed one is a full resync, as
				// another interface may hold the same address.
				var err error
				ip, v4 := netipAddr(u.LinkAddress.IP)
				e.mu.Lock()
				switch {
				case !v4:
				case u.NewAddr:
					err = e.coll.HostAddrs.Put(be32(ip), uint32(1))
					if e.isUplink(u.LinkIndex) {
						err = errors.Join(err, e.syncUplinks())
					}
				default:
					err = e.syncHostAddrs()
				}
				e.mu.Unlock()
				if err != nil {
					e.log.Error("sync host addresses", "err", err)
				}
			}
		}
	}()
	return nil
}
