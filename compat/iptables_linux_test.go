package compat

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

// iptablesSave returns iptables-save of the namespace, normalised.
func iptablesSave(t *testing.T, ns *testnet.NS) string {
	t.Helper()
	out := ns.MustRun(t, "iptables-save", "-t", "filter")
	out += ns.MustRun(t, "iptables-save", "-t", "nat")
	return normalizeSave(out, true, false)
}

// The reference networks applied with real iptables, one at a time, in a
// fresh namespace: iptables-save must print the Docker 20.10 capture.
func TestAppliedRulesMatchDocker2010(t *testing.T) {
	testnet.RequirePrivileges(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal("iptables not installed (make deps installs it)")
	}
	ns := testnet.NewNS(t, "compat")
	dir := t.TempDir()
	ctx := context.Background()
	var e *Enforcer
	do := func(f func() error) {
		t.Helper()
		if err := ns.Do(f); err != nil {
			t.Fatal(err)
		}
	}
	do(func() (err error) {
		e, err = New(slog.New(slog.NewTextHandler(io.Discard, nil)), "DOCKER", dir)
		if err != nil {
			return err
		}
		e.mode = UserlandProxy
		return e.Reconcile(ctx, network.View{})
	})
	var v network.View
	for _, step := range refSteps[:7] {
		n := step.networks[len(step.networks)-1]
		v.Networks = append(v.Networks, n)
		do(func() error { return e.NetworkAdded(ctx, v, n) })
		if got, want := iptablesSave(t, ns), referenceRules(t, step.file, false); got != want {
			t.Fatalf("after %s:\n%s", step.file, lineDiff(want, got))
		}
	}
	// Step 40: all user networks removed, snat-network added, with a rule of
	// the user's in DOCKER-USER that must survive.
	ns.MustRun(t, "iptables", strings.Fields(strings.Replace(refUserRule, "-A", "-I", 1))...)
	for len(v.Networks) > 1 {
		n := v.Networks[len(v.Networks)-1]
		v.Networks = v.Networks[:len(v.Networks)-1]
		do(func() error { return e.NetworkRemoved(ctx, v, n) })
	}
	v.Networks = append(v.Networks, refSNAT)
	do(func() error { return e.NetworkAdded(ctx, v, refSNAT) })
	if got, want := iptablesSave(t, ns), referenceRules(t, "40-snat-host_ipv4-network", true); got != want {
		t.Fatalf("step 40:\n%s", lineDiff(want, got))
	}
	// A restart re-asserts without duplicating anything.
	do(func() (err error) {
		e2, err := New(slog.New(slog.NewTextHandler(io.Discard, nil)), "DOCKER", dir)
		if err != nil {
			return err
		}
		e2.mode = UserlandProxy
		return e2.Reconcile(ctx, v)
	})
	if got, want := iptablesSave(t, ns), referenceRules(t, "40-snat-host_ipv4-network", true); got != want {
		t.Fatalf("after restart:\n%s", lineDiff(want, got))
	}
}
