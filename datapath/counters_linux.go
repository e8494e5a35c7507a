package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/loader"
	"github.com/bpfnet/bpfnet/network"
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
		bpf.BpfnetDropReasonREASON_ROUTER: "router", bpf.BpfnetDropReasonREASON_FLOW_LIMIT: "flow_limit",
	} {
		names[r] = n
	}
	return names
}()

// counters reads what the programs count: every endpoint's packets and
// bytes (its slot of the per-CPU traffic array), drops by reason (per
// (ifindex, direction, family)), and the drop events of the ring buffer. It
// caches nothing; the policy says which endpoint or network an interface
// and a slot belong to.
type counters struct {
	log    *slog.Logger
	coll   *loader.Collection
	policy *policy
}

// Counts reads every counter (network.Counter): each endpoint's traffic
// (one read per direction) and the drops of every veth and bridge
// (batched), by endpoint and network id.
func (c *counters) Counts() (network.Counts, error) {
	veths, bridges, slots := c.policy.owners()
	out := network.Counts{Endpoints: map[string]api.EndpointCounters{}, Networks: map[string]api.EndpointCounters{}, ByFamily: true}
	for id, s := range slots {
		from, to, err := c.traffic(s)
		if err != nil {
			return out, err
		}
		out.Endpoints[id] = api.EndpointCounters{FromContainer: from, ToContainer: to}
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return out, err
	}
	const chunk = 1024
	keys := make([]bpf.BpfnetDropKey, chunk)
	vals := make([]bpf.BpfnetDropCounts, chunk*ncpu)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := c.coll.Drops.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			k := keys[i]
			switch id, ok := veths[k.Ifindex]; {
			case ok:
				out.Endpoints[id] = addDrops(out.Endpoints[id], k, vals[i*ncpu:(i+1)*ncpu])
			default:
				if id, ok := bridges[k.Ifindex]; ok {
					out.Networks[id] = addDrops(out.Networks[id], k, vals[i*ncpu:(i+1)*ncpu])
				}
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("read drop counters: %w", err)
		}
	}
}

// familyNames are the api names of enum family, by index.
var familyNames = [bpf.BpfnetFamilyFAMILY_MAX]string{bpf.BpfnetFamilyFAMILY_IPV4: api.FamilyIPv4, bpf.BpfnetFamilyFAMILY_IPV6: api.FamilyIPv6}

// trafficIndex is the traffic entry of a slot, direction and family (as
// traffic_index in counters.h).
func trafficIndex(slot uint32, dir bpf.BpfnetDirection, family bpf.BpfnetFamily) uint32 {
	return (slot*2+uint32(dir))*uint32(bpf.BpfnetFamilyFAMILY_MAX) + uint32(family)
}

// traffic returns a slot's counts in both directions, summed over CPUs.
func (c *counters) traffic(s uint32) (from, to api.Counts, err error) {
	var per []bpf.BpfnetTrafficCounts
	for dir, cnt := range map[bpf.BpfnetDirection]*api.Counts{bpf.BpfnetDirectionDIR_FROM_CONTAINER: &from, bpf.BpfnetDirectionDIR_TO_CONTAINER: &to} {
		for fam, name := range familyNames {
			if err := c.coll.Traffic.Lookup(trafficIndex(s, dir, bpf.BpfnetFamily(fam)), &per); err != nil {
				return from, to, fmt.Errorf("read traffic slot %d: %w", s, err)
			}
			var packets, bytes uint64
			for _, v := range per {
				packets += v.Packets
				bytes += v.Bytes
			}
			cnt.AddTraffic(name, packets, bytes)
		}
	}
	return from, to, nil
}

// addDrops adds one (ifindex, direction, family)'s drops, per CPU, to ec.
func addDrops(ec api.EndpointCounters, k bpf.BpfnetDropKey, per []bpf.BpfnetDropCounts) api.EndpointCounters {
	c := &ec.FromContainer
	if k.Dir == uint32(bpf.BpfnetDirectionDIR_TO_CONTAINER) {
		c = &ec.ToContainer
	}
	if k.Family >= uint32(len(familyNames)) {
		return ec
	}
	for _, v := range per {
		for r, n := range v.Packets {
			if n != 0 {
				c.AddDrops(familyNames[k.Family], ReasonNames[r], n, v.Bytes[r])
			}
		}
	}
	return ec
}

// drops streams the programs' drop events until ctx ends (network.DropSource).
// The programs send at most events_per_sec per CPU; what they suppress is
// counted in the stats.
func (c *counters) drops(ctx context.Context) (<-chan network.DropEvent, error) {
	rd, err := ringbuf.NewReader(c.coll.Events)
	if err != nil {
		return nil, fmt.Errorf("open drop events: %w", err)
	}
	go func() {
		<-ctx.Done()
		rd.Close()
	}()
	// Event times are CLOCK_MONOTONIC; translate once to wall time.
	wallOffset := time.Now().UnixNano() - int64(monotonic())
	out := make(chan network.DropEvent, 1024)
	go func() {
		defer close(out)
		for {
			rec, err := rd.Read()
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					c.log.Error("read drop events", "err", err)
				}
				return
			}
			var ev bpf.BpfnetDropEvent
			if decodeEvent(rec.RawSample, &ev) != nil {
				continue
			}
			x := dropEvent(&ev)
			x.Time = time.Unix(0, int64(ev.Ts)+wallOffset)
			x.EndpointID, x.NetworkID = c.policy.ownerOf(ev.Ifindex)
			select {
			case out <- x:
			case <-ctx.Done():
				return
			default: // a slow reader misses events rather than holding the programs' buffer
			}
		}
	}()
	return out, nil
}
