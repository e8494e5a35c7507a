package datapath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/bpf"
)

// monotonic is bpf_ktime_get_ns()'s clock.
func monotonic() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
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

func (e *Enforcer) readTimeouts() (timeouts, error) {
	var t timeouts
	v := e.coll.BpfnetVariables
	err := errors.Join(v.CtTimeoutTcpSyn.Get(&t.tcpSyn), v.CtTimeoutTcpEst.Get(&t.tcpEst), v.CtTimeoutTcpFin.Get(&t.tcpFin),
		v.CtTimeoutTcpRst.Get(&t.tcpRst), v.CtTimeoutUdp.Get(&t.udp), v.CtTimeoutUdpStream.Get(&t.udpStream), v.CtTimeoutOther.Get(&t.other))
	return t, err
}

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
	case unix.IPPROTO_ICMP:
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
	}
	return fmt.Sprint(p)
}

func port(v uint16) uint16 { // network order in memory → host value
	return v>>8 | v<<8
}

// NATEntry is one translation (nat_fwd).
type NATEntry struct {
	// Kind is "masquerade" (the container's source was translated) or
	// "published" (a connection to a published port: Translated is the
	// host address and port the peer connected to).
	Kind                          string
	Proto                         string
	Container, Translated, Remote netip.AddrPort
	State                         string
	Age, Idle                     time.Duration
}

// NATEntries lists the live translations.
func (e *Enforcer) NATEntries() ([]NATEntry, error) {
	t, err := e.readTimeouts()
	if err != nil {
		return nil, err
	}
	now := monotonic()
	var out []NATEntry
	var k bpf.BpfnetTuple
	var v bpf.BpfnetNatEntry
	it := e.coll.NatFwd.Iterate()
	for it.Next(&k, &v) {
		if expired(now, v.LastSeen, t.timeout(k.Proto, v.Flags&0xffff)) {
			continue
		}
		kind := "masquerade"
		if v.Flags&uint32(bpf.BpfnetNatFlagNAT_F_DNAT) != 0 {
			kind = "published"
		}
		out = append(out, NATEntry{
			Kind:       kind,
			Proto:      protoName(k.Proto),
			Container:  netip.AddrPortFrom(addrOf(k.Saddr), port(k.Sport)),
			Translated: netip.AddrPortFrom(addrOf(v.Addr), port(v.Port)),
			Remote:     netip.AddrPortFrom(addrOf(k.Daddr), port(k.Dport)),
			State:      stateName(k.Proto, v.Flags),
			Age:        time.Duration(since(now, v.Created)),
			Idle:       time.Duration(since(now, v.LastSeen)),
		})
	}
	return out, it.Err()
}

// Stats returns the datapath's event counters (enum stat) by name.
func (e *Enforcer) Stats() (map[string]uint64, error) {
	names := map[bpf.BpfnetStat]string{
		bpf.BpfnetStatSTAT_NAT_CREATED: "nat_created", bpf.BpfnetStatSTAT_NAT_EXHAUSTED: "nat_exhausted",
		bpf.BpfnetStatSTAT_NAT_EXPIRED: "nat_expired", bpf.BpfnetStatSTAT_CT_EXPIRED: "ct_expired",
		bpf.BpfnetStatSTAT_FAST_OUT: "fast_out", bpf.BpfnetStatSTAT_FAST_IN: "fast_in", bpf.BpfnetStatSTAT_FAST_LOCAL: "fast_local",
		bpf.BpfnetStatSTAT_DNAT_CREATED: "dnat_created", bpf.BpfnetStatSTAT_SOCK_DNAT: "sock_dnat",
	}
	out := map[string]uint64{}
	for id, name := range names {
		var per []uint64
		if err := e.coll.Stats.Lookup(uint32(id), &per); err != nil {
			return nil, fmt.Errorf("read stats: %w", err)
		}
		for _, v := range per {
			out[name] += v
		}
	}
	e.mu.Lock()
	out["nat_expired"] += e.gcNAT
	out["ct_expired"] += e.gcCT
	e.mu.Unlock()
	n, err := e.NATEntries()
	if err != nil {
		return nil, err
	}
	out["nat_entries"] = uint64(len(n))
	return out, nil
}

// CollectExpired deletes expired translations (both halves) and
// connection-table entries; the counts add to the nat_expired and
// ct_expired stats.
func (e *Enforcer) CollectExpired() (nat, ct int, err error) {
	t, err := e.readTimeouts()
	if err != nil {
		return 0, 0, err
	}
	now := monotonic()
	var k bpf.BpfnetTuple
	var v bpf.BpfnetNatEntry
	var fwd, rev []bpf.BpfnetTuple
	it := e.coll.NatFwd.Iterate()
	for it.Next(&k, &v) {
		if expired(now, v.LastSeen, t.timeout(k.Proto, v.Flags&0xffff)) {
			fwd = append(fwd, k)
			rev = append(rev, replyOf(bpf.BpfnetTuple{Saddr: v.Addr, Daddr: k.Daddr, Sport: v.Port, Dport: k.Dport, Proto: k.Proto}))
		}
	}
	it = e.coll.NatRev.Iterate()
	for it.Next(&k, &v) {
		if v.Flags&uint32(bpf.BpfnetNatFlagNAT_F_HOST) != 0 && expired(now, v.LastSeen, t.timeout(k.Proto, v.Flags&0xffff)) {
			rev = append(rev, k)
		}
	}
	var ck bpf.BpfnetTuple
	var cv bpf.BpfnetCtEntry
	var cts []bpf.BpfnetTuple
	cit := e.coll.Conntrack.Iterate()
	for cit.Next(&ck, &cv) {
		if expired(now, cv.LastSeen, t.timeout(ck.Proto, cv.Flags)) {
			cts = append(cts, ck)
		}
	}
	var errs []error
	for _, k := range fwd {
		errs = append(errs, del(e.coll.NatFwd, k))
	}
	for _, k := range rev {
		errs = append(errs, del(e.coll.NatRev, k))
	}
	for _, k := range cts {
		errs = append(errs, del(e.coll.Conntrack, k))
	}
	e.mu.Lock()
	e.gcNAT += uint64(len(fwd))
	e.gcCT += uint64(len(cts))
	e.mu.Unlock()
	return len(fwd), len(cts), errors.Join(errs...)
}

// replyOf mirrors reply_of() of nat.h.
func replyOf(k bpf.BpfnetTuple) bpf.BpfnetTuple {
	r := bpf.BpfnetTuple{Saddr: k.Daddr, Daddr: k.Saddr, Proto: k.Proto}
	if k.Proto == unix.IPPROTO_ICMP {
		r.Sport = k.Sport
	} else {
		r.Sport, r.Dport = k.Dport, k.Sport
	}
	return r
}

// RunGC collects expired entries every interval until ctx ends.
func (e *Enforcer) RunGC(ctx context.Context, interval time.Duration) {
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if n, c, err := e.CollectExpired(); err != nil {
					e.log.Error("collect expired translations", "err", err)
				} else if n+c > 0 {
					e.log.Debug("collected expired entries", "translations", n, "flows", c)
				}
			}
		}
	}()
}
