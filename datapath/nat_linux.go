package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/loader"
)

// monotonic is CLOCK_MONOTONIC: bpf_ktime_get_ns()'s clock, and the one
// clock_ns() (bpf_ktime_get_coarse_ns) reads at tick resolution, never
// ahead of this.
func monotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for this clock
	return uint64(ts.Nano())
}

// expired mirrors expired() of conntrack.h: a stamp later than now (set by
// a CPU after we read the clock) is fresh, not wrapped.
func expired(now, seen, timeout uint64) bool { return now > seen && now-seen > timeout }

func since(now, t uint64) uint64 {
	if t > now {
		return 0
	}
	return now - t
}

// timeouts are the connection-table timeouts the programs were loaded
// with (conntrack.h), in nanoseconds.
type timeouts struct{ tcpSyn, tcpEst, tcpFin, tcpRst, udp, udpStream, other uint64 }

// timeout mirrors ct_timeout() of conntrack.h.
func (t timeouts) timeout(proto uint8, flags uint32) uint64 {
	switch proto {
	case unix.IPPROTO_TCP:
		switch {
		case flags&uint32(bpf.BpfnetCtFlagCT_F_RST) != 0:
			return t.tcpRst
		case flags&uint32(bpf.BpfnetCtFlagCT_F_FIN) != 0:
			return t.tcpFin
		case flags&uint32(bpf.BpfnetCtFlagCT_F_REPLIED) != 0:
			return t.tcpEst
		}
		return t.tcpSyn
	case unix.IPPROTO_UDP:
		if flags&uint32(bpf.BpfnetCtFlagCT_F_REPLIED) != 0 {
			return t.udpStream
		}
		return t.udp
	}
	return t.other
}

func stateName(proto uint8, flags uint32) string {
	replied := flags&uint32(bpf.BpfnetCtFlagCT_F_REPLIED) != 0
	switch proto {
	case unix.IPPROTO_TCP:
		switch {
		case flags&uint32(bpf.BpfnetCtFlagCT_F_RST) != 0:
			return "reset"
		case flags&uint32(bpf.BpfnetCtFlagCT_F_FIN) != 0:
			return "closing"
		case replied:
			return "established"
		}
		return "syn_sent"
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		if replied {
			return "echo_replied"
		}
		return "echo"
	}
	if replied {
		return "replied"
	}
	return "unreplied"
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	}
	return fmt.Sprint(p)
}

func port(v uint16) uint16 { // network order in memory → host value
	return v>>8 | v<<8
}

// natTable is the connection and translation tables the programs keep
// (conntrack.h, nat.h): listing the live translations, the datapath's
// event counters, and the maintenance program that removes expired
// entries and, when an endpoint goes, every entry of its address. Runs of
// the maintenance program are serialised (they share its argument map).
type natTable struct {
	log  *slog.Logger
	coll *loader.Collection

	mu      sync.Mutex    // one maintenance run at a time
	expired atomic.Uint64 // entries the maintenance program collected
}

func (n *natTable) readTimeouts() (timeouts, error) {
	var t timeouts
	v := n.coll.BpfnetVariables
	err := errors.Join(v.CtTimeoutTcpSyn.Get(&t.tcpSyn), v.CtTimeoutTcpEst.Get(&t.tcpEst), v.CtTimeoutTcpFin.Get(&t.tcpFin),
		v.CtTimeoutTcpRst.Get(&t.tcpRst), v.CtTimeoutUdp.Get(&t.udp), v.CtTimeoutUdpStream.Get(&t.udpStream), v.CtTimeoutOther.Get(&t.other))
	return t, err
}

// entries lists the live translations (network.NATLister), IPv4 and
// IPv6.
func (n *natTable) entries() ([]api.NATEntry, error) {
	t, err := n.readTimeouts()
	if err != nil {
		return nil, err
	}
	now := monotonic()
	var out []api.NATEntry
	add := func(proto uint8, container, translated, remote netip.AddrPort, flags uint32, created, lastSeen uint64) {
		if expired(now, lastSeen, t.timeout(proto, flags&0xffff)) {
			return
		}
		kind := "masquerade"
		if flags&uint32(bpf.BpfnetNatFlagNAT_F_DNAT) != 0 {
			kind = "published"
		}
		out = append(out, api.NATEntry{
			Kind:        kind,
			Proto:       protoName(proto),
			Container:   container.String(),
			Translated:  translated.String(),
			Remote:      remote.String(),
			State:       stateName(proto, flags),
			AgeSeconds:  time.Duration(since(now, created)).Seconds(),
			IdleSeconds: time.Duration(since(now, lastSeen)).Seconds(),
		})
	}
	var k bpf.BpfnetTuple
	var v bpf.BpfnetNatEntry
	it := n.coll.NatFwd.Iterate()
	for it.Next(&k, &v) {
		ap := func(a uint32, p uint16) netip.AddrPort { return netip.AddrPortFrom(addrOf(a), port(p)) }
		add(k.Proto, ap(k.Saddr, k.Sport), ap(v.Addr, v.Port), ap(k.Daddr, k.Dport), v.Flags, v.Created, v.LastSeen)
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	var k6 bpf.BpfnetTuple6
	var v6 bpf.BpfnetNatEntry6
	it = n.coll.NatFwd6.Iterate()
	for it.Next(&k6, &v6) {
		ap := func(a bpf.BpfnetIn6Key, p uint16) netip.AddrPort { return netip.AddrPortFrom(addrOf6(a), port(p)) }
		add(k6.Proto, ap(k6.Saddr, k6.Sport), ap(v6.Addr, v6.Port), ap(k6.Daddr, k6.Dport), v6.Flags, v6.Created, v6.LastSeen)
	}
	return out, it.Err()
}

// stats returns the datapath's event counters (enum stat) by name, and
// the tables' sizes (ct_entries, nat_entries).
func (n *natTable) stats() (map[string]uint64, error) {
	names := map[bpf.BpfnetStat]string{
		bpf.BpfnetStatSTAT_NAT_CREATED: "nat_created", bpf.BpfnetStatSTAT_NAT_EXHAUSTED: "nat_exhausted",
		bpf.BpfnetStatSTAT_NAT_EXPIRED: "nat_expired", bpf.BpfnetStatSTAT_CT_EXPIRED: "ct_expired",
		bpf.BpfnetStatSTAT_FAST_OUT: "fast_out", bpf.BpfnetStatSTAT_FAST_IN: "fast_in", bpf.BpfnetStatSTAT_FAST_LOCAL: "fast_local",
		bpf.BpfnetStatSTAT_DNAT_CREATED: "dnat_created", bpf.BpfnetStatSTAT_SOCK_DNAT: "sock_dnat",
		bpf.BpfnetStatSTAT_UPLINK_SPOOFED: "uplink_spoofed", bpf.BpfnetStatSTAT_FLOW_LIMIT: "flow_limit",
		bpf.BpfnetStatSTAT_HOST_TAKEOVER: "host_takeover",
		// Counts that go up and down on any CPU: their sum is the size.
		bpf.BpfnetStatSTAT_CT_LIVE: "ct_entries", bpf.BpfnetStatSTAT_NAT_LIVE: "nat_entries",
	}
	out := map[string]uint64{}
	for id, name := range names {
		var per []uint64
		if err := n.coll.Stats.Lookup(uint32(id), &per); err != nil {
			return nil, fmt.Errorf("read stats: %w", err)
		}
		for _, v := range per {
			out[name] += v
		}
	}
	out["nat_expired"] += n.expired.Load()
	return out, nil
}

// maintain runs the maintenance program (bpf/include/gc.h) once in mode,
// for the endpoint's addresses in args when purging, and returns how many
// entries it removed (callers hold n.mu).
func (n *natTable) maintain(mode bpf.BpfnetGcMode, args bpf.BpfnetGcArgs) (uint64, error) {
	args.Mode = uint32(mode)
	if err := n.coll.GcArgs.Put(uint32(0), args); err != nil {
		return 0, fmt.Errorf("maintenance arguments: %w", err)
	}
	// BPF_PROG_TEST_RUN needs a frame; the program does not read it.
	if _, err := n.coll.Maintain.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
		return 0, fmt.Errorf("run maintenance program: %w", err)
	}
	var a bpf.BpfnetGcArgs
	if err := n.coll.GcArgs.Lookup(uint32(0), &a); err != nil {
		return 0, fmt.Errorf("maintenance result: %w", err)
	}
	return a.Removed, nil
}

// collectExpired removes the translations (both halves), reply halves and
// connection-table entries expired for longer than the grace time, in the
// kernel, each checked and removed in one step (gc.h); the count adds to
// the nat_expired stat.
func (n *natTable) collectExpired() (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	removed, err := n.maintain(bpf.BpfnetGcModeGC_EXPIRED, bpf.BpfnetGcArgs{})
	n.expired.Add(removed)
	return int(removed), err
}

// purge removes every table entry that refers to one of an endpoint's
// addresses (ip6 invalid: it has none over IPv6).
func (n *natTable) purge(ip, ip6 netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	args := bpf.BpfnetGcArgs{Addr: be32(ip)}
	if ip6.IsValid() {
		args.Addr6 = in6(ip6)
	}
	_, err := n.maintain(bpf.BpfnetGcModeGC_PURGE, args)
	return err
}

// collectEvery collects expired entries every interval until ctx ends.
func (n *natTable) collectEvery(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if removed, err := n.collectExpired(); err != nil {
				n.log.Error("collect expired translations", "err", err)
			} else if removed > 0 {
				n.log.Debug("collected expired entries", "entries", removed)
			}
		}
	}
}
