package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/datapath"
	"github.com/bpfnet/bpfnet/exporter"
	"github.com/bpfnet/bpfnet/network"
)

// observer reads counters and drop events for the metrics, the CLI and
// `bpfnet monitor`, from whichever datapath runs.
type observer struct {
	log *slog.Logger
	mgr *network.Manager
	sel *selected

	mu   sync.Mutex
	subs map[chan api.MonitorEvent]struct{}
}

func newObserver(log *slog.Logger, mgr *network.Manager, sel *selected) *observer {
	return &observer{log: log, mgr: mgr, sel: sel, subs: map[chan api.MonitorEvent]struct{}{}}
}

func countsOf(c datapath.Counts) exporter.Counts {
	return exporter.Counts{Packets: c.Packets, Bytes: c.Bytes, Drops: c.Drops}
}

// Datapath implements exporter.Source.
func (o *observer) Datapath() (string, string) {
	if o.sel.ebpf != nil {
		return "ebpf", o.sel.ebpf.AttachMode()
	}
	return "iptables", ""
}

// Snapshot implements exporter.Source. In eBPF mode the counters come
// from the BPF maps; in iptables mode packets and bytes come from the
// veths' interface statistics and drops from the DROP rules' counters,
// per network (iptables cannot tell the endpoint).
func (o *observer) Snapshot() (exporter.Snapshot, error) {
	v := o.mgr.View()
	names := map[string]string{}
	snap := exporter.Snapshot{Released: o.mgr.Released()}
	for _, n := range v.Networks {
		names[n.ID] = n.Name
		snap.Networks = append(snap.Networks, n.Name)
	}
	if o.sel.ebpf != nil {
		counters, err := o.sel.ebpf.Counters()
		if err != nil {
			return snap, err
		}
		veths, bridges := o.sel.ebpf.Ifindexes()
		for _, ep := range v.Endpoints {
			c := counters[veths[ep.ID]]
			snap.Endpoints = append(snap.Endpoints, exporter.Endpoint{Network: names[ep.NetworkID], Endpoint: ep.Name,
				Interface: ep.HostIf, FromContainer: countsOf(c.FromContainer), ToContainer: countsOf(c.ToContainer)})
		}
		snap.NetworkDrops = map[string]map[string]map[string]uint64{}
		for id, idx := range bridges {
			if c, ok := counters[idx]; ok && len(c.ToContainer.Drops) > 0 {
				snap.NetworkDrops[names[id]] = map[string]map[string]uint64{"to_container": c.ToContainer.Drops}
			}
		}
		st, err := o.sel.ebpf.Stats()
		if err != nil {
			return snap, err
		}
		snap.NAT = &exporter.NAT{Entries: st["nat_entries"], Created: st["nat_created"], Exhausted: st["nat_exhausted"], Expired: st["nat_expired"]}
		return snap, nil
	}
	for _, ep := range v.Endpoints {
		e := exporter.Endpoint{Network: names[ep.NetworkID], Endpoint: ep.Name, Interface: ep.HostIf}
		if l, err := netlink.LinkByName(ep.HostIf); err == nil && l.Attrs().Statistics != nil {
			s := l.Attrs().Statistics
			// The host side receives what the container sends.
			e.FromContainer = exporter.Counts{Packets: s.RxPackets, Bytes: s.RxBytes}
			e.ToContainer = exporter.Counts{Packets: s.TxPackets, Bytes: s.TxBytes}
		}
		snap.Endpoints = append(snap.Endpoints, e)
	}
	drops, err := o.sel.compat.DropCounts(v)
	snap.NetworkDrops = drops
	return snap, err
}

// EndpointCounters returns the counters of every endpoint by id.
func (o *observer) EndpointCounters() (map[string]api.EndpointCounters, error) {
	snap, err := o.Snapshot()
	if err != nil {
		return nil, err
	}
	byName := map[string]string{}
	for _, ep := range o.mgr.View().Endpoints {
		byName[ep.Name] = ep.ID
	}
	out := map[string]api.EndpointCounters{}
	for _, e := range snap.Endpoints {
		out[byName[e.Endpoint]] = api.EndpointCounters{
			FromContainer: api.Counts{Packets: e.FromContainer.Packets, Bytes: e.FromContainer.Bytes, Drops: e.FromContainer.Drops},
			ToContainer:   api.Counts{Packets: e.ToContainer.Packets, Bytes: e.ToContainer.Bytes, Drops: e.ToContainer.Drops},
		}
	}
	return out, nil
}

// runEvents reads the datapath's drop events and hands them, with the
// endpoint and network they concern, to every monitor subscriber. A slow
// subscriber misses events rather than holding the others up.
func (o *observer) runEvents(ctx context.Context) error {
	raw := make(chan datapath.Event, 1024)
	if err := o.sel.ebpf.Events(ctx, raw); err != nil {
		return err
	}
	go func() {
		for ev := range raw {
			o.mu.Lock()
			watched := len(o.subs) > 0
			o.mu.Unlock()
			if !watched {
				continue // naming the interface reads the whole model: only for someone watching
			}
			out := api.MonitorEvent{Time: ev.Time, Direction: ev.Direction, Reason: ev.Reason, Proto: ev.Proto}
			if ev.Proto != "" {
				out.Src, out.Dst = ev.Src.String(), ev.Dst.String()
			}
			o.describe(&out, ev.Ifindex)
			o.mu.Lock()
			for ch := range o.subs {
				select {
				case ch <- out:
				default:
				}
			}
			o.mu.Unlock()
		}
	}()
	return nil
}

// describe names the endpoint (or network) an interface index belongs to.
func (o *observer) describe(ev *api.MonitorEvent, ifindex uint32) {
	veths, bridges := o.sel.ebpf.Ifindexes()
	v := o.mgr.View()
	for _, ep := range v.Endpoints {
		if veths[ep.ID] == ifindex {
			ev.Endpoint, ev.Interface = ep.Name, ep.HostIf
			if n := v.Network(ep.NetworkID); n != nil {
				ev.Network = n.Name
			}
			return
		}
	}
	for _, n := range v.Networks {
		if bridges[n.ID] == ifindex {
			ev.Network, ev.Interface = n.Name, n.Bridge
			return
		}
	}
}

// subscribe returns a channel of drop events until ctx ends.
func (o *observer) subscribe(ctx context.Context) (<-chan api.MonitorEvent, error) {
	ch := make(chan api.MonitorEvent, 256)
	o.mu.Lock()
	o.subs[ch] = struct{}{}
	o.mu.Unlock()
	go func() {
		<-ctx.Done()
		o.mu.Lock()
		delete(o.subs, ch)
		close(ch)
		o.mu.Unlock()
	}()
	return ch, nil
}
