package bpf

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// TestSharedStructLayouts checks that every struct shared with Go has the
// layout the object's BTF gives it: the same size, and every named C
// member at the same offset as the Go field of that name (nested structs
// too). A stale generated file, or two swapped fields of one size, would
// make the Go side read and write map entries wrongly.
func TestSharedStructLayouts(t *testing.T) {
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
		"tuple6":         BpfnetTuple6{},
		"nat_entry6":     BpfnetNatEntry6{},
		"frag_entry":     BpfnetFragEntry{},
		"frag_key":       BpfnetFragKey{},
		"uplink_info":    BpfnetUplinkInfo{},
		"drop_event":     BpfnetDropEvent{},
		"event_budget":   BpfnetEventBudget{},
		"ct_entry":       BpfnetCtEntry{},
		"gc_args":        BpfnetGcArgs{},
		"peer_key":       BpfnetPeerKey{},
		"peer_entry":     BpfnetPeerEntry{},
		"port_key":       BpfnetPortKey{},
		"port_backend":   BpfnetPortBackend{},
		"sock_key":       BpfnetSockKey{},
		"sock_orig":      BpfnetSockOrig{},
	} {
		var st *btf.Struct
		if err := spec.Types.TypeByName(cName, &st); err != nil {
			t.Errorf("struct %s: %v", cName, err)
			continue
		}
		compareLayout(t, cName, st, reflect.TypeOf(goVal))
	}
}

// compareLayout compares a BTF struct with its Go type, member by member.
func compareLayout(t *testing.T, path string, st *btf.Struct, gt reflect.Type) {
	t.Helper()
	if got, want := gt.Size(), uintptr(st.Size); got != want {
		t.Errorf("struct %s: Go size %d, BTF size %d", path, got, want)
	}
	for _, m := range st.Members {
		if m.Name == "" || strings.HasPrefix(m.Name, "_") {
			continue // padding
		}
		f, ok := gt.FieldByName(goName(m.Name))
		if !ok {
			t.Errorf("struct %s: member %s has no Go field %s", path, m.Name, goName(m.Name))
			continue
		}
		if got, want := f.Offset, uintptr(m.Offset.Bytes()); got != want {
			t.Errorf("struct %s: member %s at offset %d in C, Go field %s at %d", path, m.Name, want, f.Name, got)
		}
		if inner, ok := btf.UnderlyingType(m.Type).(*btf.Struct); ok {
			compareLayout(t, path+"."+m.Name, inner, f.Type)
		}
	}
}

// goName is bpf2go's name of a C member: last_seen → LastSeen.
func goName(c string) string {
	var b strings.Builder
	for _, part := range strings.Split(c, "_") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}
