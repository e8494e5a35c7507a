package bpf

import (
	"reflect"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// TestSharedStructSizes checks that every struct shared with Go has the
// size the object's BTF gives it, so the Go side reads and writes map
// entries with the C layout (a stale generated file would not).
func TestSharedStructSizes(t *testing.T) {
	spec, err := LoadBpfnet()
	if err != nil {
		t.Fatal(err)
	}
	for cName, goVal := range map[string]any{
		"endpoint_info":  BpfnetEndpointInfo{},
		"ip_endpoint":    BpfnetIpEndpoint{},
		"network_info":   BpfnetNetworkInfo{},
		"subnet_key":     BpfnetSubnetKey{},
		"drop_key":       BpfnetDropKey{},
		"drop_counts":    BpfnetDropCounts{},
		"traffic_counts": BpfnetTrafficCounts{},
		"tuple":          BpfnetTuple{},
		"nat_entry":      BpfnetNatEntry{},
		"frag_entry":     BpfnetFragEntry{},
		"uplink_info":    BpfnetUplinkInfo{},
		"drop_event":     BpfnetDropEvent{},
		"event_budget":   BpfnetEventBudget{},
		"ct_entry":       BpfnetCtEntry{},
		"frag_key":       BpfnetFragKey{},
	} {
		var st *btf.Struct
		if err := spec.Types.TypeByName(cName, &st); err != nil {
			t.Errorf("struct %s: %v", cName, err)
			continue
		}
		if got, want := reflect.TypeOf(goVal).Size(), uintptr(st.Size); got != want {
			t.Errorf("struct %s: Go size %d, BTF size %d", cName, got, want)
		}
	}
}
