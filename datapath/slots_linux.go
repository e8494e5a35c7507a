package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/loader"
	"github.com/bpfnet/bpfnet/network"
)

// Every endpoint has a slot: its packets and bytes are four entries of the
// per-CPU traffic array, one per direction and IP family (trafficIndex),
// which the programs index instead of looking a key up in a hash. Slots live in the
// endpoints' ep_by_ifindex entries, so a restarted daemon keeps each
// endpoint's slot and its counts.

// slotsInUse returns the slot of every endpoint in ep_by_ifindex, by
// host-side veth ifindex.
func (p *policy) slotsInUse() (map[uint32]uint32, error) {
	out := map[uint32]uint32{}
	var k uint32
	var v bpf.BpfnetEndpointInfo
	it := p.coll.EpByIfindex.Iterate()
	for it.Next(&k, &v) {
		out[k] = v.Slot
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read endpoint slots: %w", err)
	}
	return out, nil
}

// newSlot returns the lowest slot no endpoint holds, with its counts
// zeroed (callers hold p.mu).
func (p *policy) newSlot() (uint32, error) {
	taken := make(map[uint32]bool, len(p.slots))
	for _, s := range p.slots {
		taken[s] = true
	}
	return p.takeSlot(taken, 0)
}

// takeSlot returns the lowest slot from `from` on that taken lacks, marks
// it taken and zeroes its counts.
func (p *policy) takeSlot(taken map[uint32]bool, from uint32) (uint32, error) {
	max := slotCount(p.coll)
	for s := from; s < max; s++ {
		if !taken[s] {
			taken[s] = true
			return s, p.zeroSlot(s)
		}
	}
	return 0, fmt.Errorf("all %d endpoint slots of the eBPF datapath are in use", max)
}

// slotCount is the number of endpoint slots the traffic map has room
// for: each has an entry per direction and family.
func slotCount(coll *loader.Collection) uint32 {
	return coll.Traffic.MaxEntries() / (2 * uint32(bpf.BpfnetFamilyFAMILY_MAX))
}

// zeroSlot clears a slot's counts on every CPU, and the flow-table entries
// charged to it (whatever a removed endpoint left uncounted).
func (p *policy) zeroSlot(s uint32) error {
	if err := p.coll.EpFlows.Put(s, uint32(0)); err != nil {
		return fmt.Errorf("zero flow charges of slot %d: %w", s, err)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	zero := make([]bpf.BpfnetTrafficCounts, ncpu)
	for _, dir := range []bpf.BpfnetDirection{bpf.BpfnetDirectionDIR_FROM_CONTAINER, bpf.BpfnetDirectionDIR_TO_CONTAINER} {
		for fam := range bpf.BpfnetFamilyFAMILY_MAX {
			if err := p.coll.Traffic.Put(trafficIndex(s, dir, fam), zero); err != nil {
				return fmt.Errorf("zero traffic slot %d: %w", s, err)
			}
		}
	}
	return nil
}

// assignSlots gives every endpoint of v a slot (callers hold p.mu): the
// one its veth already has in ep_by_ifindex where there is one (the
// counts go on), a new zeroed one otherwise.
func (p *policy) assignSlots(v network.View) error {
	have, err := p.slotsInUse()
	if err != nil {
		return err
	}
	p.slots = map[string]uint32{}
	var fresh []*network.Endpoint
	taken := map[uint32]bool{}
	for _, ep := range v.Endpoints {
		ifc, err := ifaceOf(ep.HostIf)
		if err != nil {
			return err
		}
		if s, ok := have[uint32(ifc.Index)]; ok && !taken[s] {
			p.slots[ep.ID], taken[s] = s, true
		} else {
			fresh = append(fresh, ep)
		}
	}
	// One pass over the slots for all of them (every slot below the last
	// one given is taken).
	next := uint32(0)
	for _, ep := range fresh {
		s, err := p.takeSlot(taken, next)
		if err != nil {
			return err
		}
		p.slots[ep.ID], next = s, s+1
	}
	return nil
}
