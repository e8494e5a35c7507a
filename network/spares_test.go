package network_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/network"
	"github.com/bpfnet/bpfnet/network/networktest"
)

// waitFor polls cond for up to 5 s (spares are made in the background,
// after a quiet moment).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func handOff(t *testing.T, m *network.Manager) network.Endpoint {
	t.Helper()
	ep, err := m.CreateEndpoint(context.Background(), api.CreateEndpointRequest{Network: network.DefaultNetworkName, HandOff: true})
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// Spares are made once a hand-off endpoint was asked for, with their
// programs attached; the next hand-off endpoint takes the oldest, an
// endpoint made in a namespace never takes one, and when the manager's
// context ends the spares left are detached and deleted.
func TestSpares(t *testing.T) {
	calls := &networktest.Calls{}
	host := networktest.NewHost(calls)
	m := newTestManager(t, &networktest.PreattachingEnforcer{Enforcer: networktest.Enforcer{Calls: calls}}, host)
	ctx, cancel := context.WithCancel(context.Background())
	done := m.KeepSpares(ctx, 2)
	time.Sleep(300 * time.Millisecond)
	if s := host.Spares(); len(s) != 0 {
		t.Fatalf("spares %v before any hand-off endpoint was asked for", s)
	}
	first := handOff(t, m)
	if slices.Contains(calls.List(), "spare-taken "+first.Name) {
		t.Fatalf("the first hand-off endpoint took a spare before any was made")
	}
	waitFor(t, "two spares", func() bool { return len(host.Spares()) == 2 })
	spares := host.Spares()
	for _, s := range spares {
		if !slices.Contains(calls.List(), "preattach "+s) {
			t.Errorf("spare %s has no programs attached: %v", s, calls.List())
		}
	}
	second := handOff(t, m)
	if !slices.Contains(spares, second.HostIf) || !slices.Contains(calls.List(), "spare-taken "+second.Name) {
		t.Errorf("the second hand-off endpoint got %s, want one of the spares %v", second.HostIf, spares)
	}
	if _, taken := m.Spares(); taken != 1 {
		t.Errorf("Spares() counts %d taken, want 1", taken)
	}
	calls.Reset()
	if _, err := m.CreateEndpoint(context.Background(), api.CreateEndpointRequest{Network: network.DefaultNetworkName, NetNS: netnsFile(t)}); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(calls.List(), func(c string) bool { return strings.HasPrefix(c, "spare-taken ") }) {
		t.Errorf("an endpoint in a namespace took a spare: %v", calls.List())
	}
	waitFor(t, "the refill", func() bool { return len(host.Spares()) == 2 })
	left := host.Spares()
	calls.Reset()
	cancel()
	<-done
	if s := host.Spares(); len(s) != 0 {
		t.Errorf("spares %v left after the context ended", s)
	}
	for _, s := range left {
		if !slices.Contains(calls.List(), "unattach "+s) || !slices.Contains(calls.List(), "spare- "+s) {
			t.Errorf("spare %s not detached and deleted: %v", s, calls.List())
		}
	}
}

// An endpoint that took a spare and then failed leaves nothing: the
// spare's programs are detached and its pair deleted.
func TestSpareOfFailedEndpoint(t *testing.T) {
	calls := &networktest.Calls{}
	host := networktest.NewHost(calls)
	enf := &networktest.PreattachingEnforcer{Enforcer: networktest.Enforcer{Calls: calls}}
	m := newTestManager(t, enf, host)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m.KeepSpares(ctx, 1)
	handOff(t, m)
	waitFor(t, "a spare", func() bool { return len(host.Spares()) == 1 })
	spare := host.Spares()[0]
	enf.Fail = "endpoint-added"
	calls.Reset()
	if _, err := m.CreateEndpoint(context.Background(), api.CreateEndpointRequest{Network: network.DefaultNetworkName, HandOff: true}); err == nil {
		t.Fatal("the endpoint was created although the enforcer failed")
	}
	got := calls.List()
	if !slices.Contains(got, "unattach "+spare) || slices.Contains(host.Spares(), spare) {
		t.Errorf("the failed endpoint's spare %s: calls %v, spares %v; want it detached and gone", spare, got, host.Spares())
	}
	if ok, _ := host.Veth(spare); ok {
		t.Errorf("the failed endpoint's veth %s is still there", spare)
	}
}

// An enforcer whose attachments wait for nothing gets no spares.
func TestNoSparesWithoutPreattacher(t *testing.T) {
	calls := &networktest.Calls{}
	host := networktest.NewHost(calls)
	m := newTestManager(t, &networktest.Enforcer{Calls: calls}, host)
	ctx, cancel := context.WithCancel(context.Background())
	done := m.KeepSpares(ctx, 4)
	handOff(t, m)
	time.Sleep(300 * time.Millisecond)
	if s := host.Spares(); len(s) != 0 {
		t.Errorf("spares %v for an enforcer that is no Preattacher", s)
	}
	cancel()
	<-done
}
