package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/bpfnet/bpfnet/bpf"
)

// ReasonNames are the drop reasons by index (enum drop_reason), as the
// `reason` label spells them.
var ReasonNames = func() []string {
	names := make([]string, bpf.BpfnetDropReasonREASON_MAX)
	for r := range names {
		names[r] = fmt.Sprintf("reason_%d", r)
	}
	for r, n := range map[bpf.BpfnetDropReason]string{
		bpf.BpfnetDropReasonREASON_ICC: "icc", bpf.BpfnetDropReasonREASON_ISOLATION: "isolation",
		bpf.BpfnetDropReasonREASON_INTERNAL: "internal", bpf.BpfnetDropReasonREASON_SPOOF: "spoof",
		bpf.BpfnetDropReasonREASON_UNSOLICITED: "unsolicited", bpf.BpfnetDropReasonREASON_MALFORMED: "malformed",
		bpf.BpfnetDropReasonREASON_UNSUPPORTED: "unsupported", bpf.BpfnetDropReasonREASON_FRAGMENT: "fragment",
		bpf.BpfnetDropReasonREASON_NO_ENDPOINT: "no_endpoint", bpf.BpfnetDropReasonREASON_NAT_EXHAUSTED: "nat_exhausted",
		bpf.BpfnetDropReasonREASON_ROUTER: "router",
	} {
		names[r] = n
	}
	return names
}()

// Counts are one direction's counters of an interface, summed over CPUs.
type Counts struct {
	Packets, Bytes uint64
	Drops          map[string]uint64 // by reason; only reasons that occurred
}

// IfaceCounts are both directions of an interface (a host-side veth, or a
// bridge for drops no endpoint was the target of).
type IfaceCounts struct {
	FromContainer, ToContainer Counts
}

// Counters reads every counter, by ifindex: each endpoint's traffic (one
// read per direction) and the drops of every veth and bridge (batched).
// Nothing is cached.
func (e *Enforcer) Counters() (map[uint32]IfaceCounts, error) {
	e.mu.Lock()
	slots := make(map[uint32]uint32, len(e.veths))
	for id, ifc := range e.veths {
		slots[uint32(ifc.Index)] = e.slots[id]
	}
	e.mu.Unlock()
	out := map[uint32]IfaceCounts{}
	for ifindex, s := range slots {
		from, to, err := e.trafficOf(s)
		if err != nil {
			return nil, err
		}
		out[ifindex] = IfaceCounts{FromContainer: from, ToContainer: to}
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	const chunk = 1024
	keys := make([]bpf.BpfnetDropKey, chunk)
	vals := make([]bpf.BpfnetDropCounts, chunk*ncpu)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := e.coll.Drops.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			addDrops(out, keys[i], vals[i*ncpu:(i+1)*ncpu])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read drop counters: %w", err)
		}
	}
}

// addDrops adds one (ifindex, direction)'s drops, per CPU, to out.
func addDrops(out map[uint32]IfaceCounts, k bpf.BpfnetDropKey, per []bpf.BpfnetDropCounts) {
	ic := out[k.Ifindex]
	c := &ic.FromContainer
	if k.Dir == uint32(bpf.BpfnetDirectionDIR_TO_CONTAINER) {
		c = &ic.ToContainer
	}
	for _, v := range per {
		for r, n := range v.Reasons {
			if n == 0 {
				continue
			}
			if c.Drops == nil {
				c.Drops = map[string]uint64{}
			}
			c.Drops[ReasonNames[r]] += n
		}
	}
	out[k.Ifindex] = ic
}

// Event is one dropped packet.
type Event struct {
	Time      time.Time
	Ifindex   uint32
	Direction string // from_container | to_container
	Reason    string
	Proto     string // empty when the packet was not IPv4
	Src, Dst  netip.AddrPort
}

// Events streams drop events until ctx ends. The programs send at most
// events_per_sec per CPU; what they suppress is counted in the stats.
func (e *Enforcer) Events(ctx context.Context, out chan<- Event) error {
	rd, err := ringbuf.NewReader(e.coll.Events)
	if err != nil {
		return fmt.Errorf("open drop events: %w", err)
	}
	go func() {
		<-ctx.Done()
		rd.Close()
	}()
	// Event times are CLOCK_MONOTONIC; translate once to wall time.
	wallOffset := time.Now().UnixNano() - int64(monotonic())
	go func() {
		defer close(out)
		for {
			rec, err := rd.Read()
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					e.log.Error("read drop events", "err", err)
				}
				return
			}
			var ev bpf.BpfnetDropEvent
			if len(rec.RawSample) < binary.Size(ev) {
				continue
			}
			if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &ev); err != nil {
				continue
			}
			x := Event{Time: time.Unix(0, int64(ev.Ts)+wallOffset), Ifindex: ev.Ifindex, Reason: ReasonNames[ev.Reason%uint8(len(ReasonNames))],
				Direction: "from_container"}
			if ev.Dir == uint8(bpf.BpfnetDirectionDIR_TO_CONTAINER) {
				x.Direction = "to_container"
			}
			if ev.Proto != 0 {
				x.Proto = protoName(ev.Proto)
				x.Src = netip.AddrPortFrom(addrOf(ev.Saddr), port(ev.Sport))
				x.Dst = netip.AddrPortFrom(addrOf(ev.Daddr), port(ev.Dport))
			}
			select {
			case out <- x:
			case <-ctx.Done():
				return
			}
		}
	}()
	return nil
}
