package compat

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/network"
)

// fakeIPT models iptables' rule lists in memory (what -I/-A/-D/-S do), so
// the placement logic can be checked without privileges. The privileged
// test in iptables_linux_test.go runs the same sequence on real iptables.
type fakeIPT struct {
	chains map[string][]string // "table/chain" -> specs
	policy map[string]string
	calls  int
}

func newFakeIPT() *fakeIPT {
	f := &fakeIPT{chains: map[string][]string{}, policy: map[string]string{}}
	for table, chains := range builtin {
		for _, c := range chains {
			f.chains[table+"/"+c] = nil
			f.policy[table+"/"+c] = "ACCEPT"
		}
	}
	return f
}

func (f *fakeIPT) get(table, chain string) ([]string, error) {
	r, ok := f.chains[table+"/"+chain]
	if !ok {
		return nil, fmt.Errorf("no chain %s/%s", table, chain)
	}
	return r, nil
}

func (f *fakeIPT) List(table, chain string) ([]string, error) {
	r, err := f.get(table, chain)
	out := []string{"-N " + chain}
	for _, s := range r {
		out = append(out, "-A "+chain+" "+s)
	}
	return out, err
}

func (f *fakeIPT) Insert(table, chain string, pos int, spec ...string) error {
	f.calls++
	r, err := f.get(table, chain)
	if err != nil || pos < 1 || pos > len(r)+1 {
		return fmt.Errorf("bad insert %d into %s: %v", pos, chain, err)
	}
	f.chains[table+"/"+chain] = slices.Insert(r, pos-1, strings.Join(spec, " "))
	return nil
}

func (f *fakeIPT) Append(table, chain string, spec ...string) error {
	f.calls++
	r, err := f.get(table, chain)
	f.chains[table+"/"+chain] = append(r, strings.Join(spec, " "))
	return err
}

func (f *fakeIPT) Delete(table, chain string, spec ...string) error {
	f.calls++
	r, err := f.get(table, chain)
	i := slices.Index(r, strings.Join(spec, " "))
	if err != nil || i < 0 {
		return fmt.Errorf("no such rule in %s: %s", chain, strings.Join(spec, " "))
	}
	f.chains[table+"/"+chain] = slices.Delete(r, i, i+1)
	return nil
}

func (f *fakeIPT) DeleteById(table, chain string, id int) error {
	f.calls++
	r, err := f.get(table, chain)
	if err != nil || id < 1 || id > len(r) {
		return fmt.Errorf("bad rule number %d in %s: %v", id, chain, err)
	}
	f.chains[table+"/"+chain] = slices.Delete(r, id-1, id)
	return nil
}

func (f *fakeIPT) ChainExists(table, chain string) (bool, error) {
	_, ok := f.chains[table+"/"+chain]
	return ok, nil
}

func (f *fakeIPT) NewChain(table, chain string) error {
	f.chains[table+"/"+chain] = nil
	return nil
}

func (f *fakeIPT) ClearAndDeleteChain(table, chain string) error {
	delete(f.chains, table+"/"+chain)
	return nil
}

func (f *fakeIPT) ChangePolicy(table, chain, target string) error {
	f.policy[table+"/"+chain] = target
	return nil
}

// save prints the fake's tables in iptables-save form.
func (f *fakeIPT) save() string {
	var rs Ruleset
	for k, specs := range f.chains {
		table, chain, _ := strings.Cut(k, "/")
		if !slices.Contains(builtin[table], chain) {
			rs.Chains = append(rs.Chains, Chain{Table: table, Name: chain})
		}
		for _, s := range specs {
			rs.Rules = append(rs.Rules, Rule{Table: table, Chain: chain, Spec: s})
		}
	}
	return Save(rs, f.policy["filter/FORWARD"])
}

func newFakeEnforcer(t *testing.T, ipt *fakeIPT, dir string) *Enforcer {
	t.Helper()
	sys := t.TempDir()
	writeFile(t, filepath.Join(sys, "net/ipv4/ip_forward"), "0\n")
	writeFile(t, filepath.Join(sys, "net/ipv6/conf/all/forwarding"), "0\n")
	writeFile(t, filepath.Join(sys, "net/bridge/bridge-nf-call-iptables"), "1\n")
	writeFile(t, filepath.Join(sys, "net/bridge/bridge-nf-call-ip6tables"), "0\n")
	e := &Enforcer{log: slog.New(slog.NewTextHandler(io.Discard, nil)), ipt: ipt, prefix: "DOCKER", mode: UserlandProxy,
		path: filepath.Join(dir, "iptables.json"), sysctl: sys}
	if err := e.loadLedger(); err != nil {
		t.Fatal(err)
	}
	return e
}

// Adding the reference networks one at a time must give Docker's order at
// every step, as captured.
func TestIncrementalApplyMatchesDocker2010(t *testing.T) {
	ipt := newFakeIPT()
	e := newFakeEnforcer(t, ipt, t.TempDir())
	ctx := context.Background()
	var v network.View
	if err := e.Reconcile(ctx, v); err != nil {
		t.Fatal(err)
	}
	for _, step := range refSteps[:7] {
		n := step.networks[len(step.networks)-1]
		v.Networks = append(v.Networks, n)
		if err := e.NetworkAdded(ctx, v, n); err != nil {
			t.Fatal(err)
		}
		if got, want := ipt.save(), referenceRules(t, step.file, false); got != want {
			t.Fatalf("after %s:\n%s", step.file, lineDiff(want, got))
		}
	}
}

// Removing networks deletes exactly their rules, keeps foreign rules and
// the user's rules, and a resync after a restart changes nothing.
func TestRemoveAndRestartKeepForeignRules(t *testing.T) {
	ipt := newFakeIPT()
	dir := t.TempDir()
	e := newFakeEnforcer(t, ipt, dir)
	ctx := context.Background()
	v := network.View{Networks: []*network.Network{refDefault}}
	if err := e.Reconcile(ctx, v); err != nil {
		t.Fatal(err)
	}
	// Someone else's rules, and a user rule in the user chain.
	ipt.Append("filter", "FORWARD", "-i eth9", "-j", "ACCEPT")
	ipt.Insert("filter", "DOCKER-USER", 1, strings.Fields(refUserRule)[2:]...)
	v.Networks = append(v.Networks, refSNAT)
	if err := e.NetworkAdded(ctx, v, refSNAT); err != nil {
		t.Fatal(err)
	}
	want := referenceRules(t, "40-snat-host_ipv4-network", true)
	want = strings.Replace(want, "-A DOCKER-ISOLATION-STAGE-1 -i br-c34552e40c7e", "-A FORWARD -i eth9 -j ACCEPT\n-A DOCKER-ISOLATION-STAGE-1 -i br-c34552e40c7e", 1)
	if got := ipt.save(); got != want {
		t.Fatalf("with foreign rules:\n%s", lineDiff(want, got))
	}

	// A restart: a new enforcer reads the ledger and changes nothing.
	e2 := newFakeEnforcer(t, ipt, dir)
	before := ipt.calls
	if err := e2.Reconcile(ctx, v); err != nil {
		t.Fatal(err)
	}
	if ipt.calls != before {
		t.Errorf("reconcile of an unchanged state made %d iptables changes", ipt.calls-before)
	}

	v.Networks = v.Networks[:1]
	if err := e2.NetworkRemoved(ctx, v, refSNAT); err != nil {
		t.Fatal(err)
	}
	want = referenceRules(t, "01-fresh", false)
	want = strings.Replace(want, "-A DOCKER-ISOLATION-STAGE-1 -i docker0", "-A FORWARD -i eth9 -j ACCEPT\n-A DOCKER-ISOLATION-STAGE-1 -i docker0", 1)
	want = strings.Replace(want, "-A DOCKER-USER -j RETURN", refUserRule+"\n-A DOCKER-USER -j RETURN", 1)
	if got := ipt.save(); got != want {
		t.Fatalf("after removing snat-network:\n%s", lineDiff(want, got))
	}
}

// A rule pushed above the two FORWARD jumps by someone else is put back
// below them, and duplicates of ours (e.g. after a crash) are removed.
func TestSyncRepairsOrderAndDuplicates(t *testing.T) {
	ipt := newFakeIPT()
	e := newFakeEnforcer(t, ipt, t.TempDir())
	ctx := context.Background()
	v := network.View{Networks: []*network.Network{refDefault}}
	if err := e.Reconcile(ctx, v); err != nil {
		t.Fatal(err)
	}
	ipt.Insert("filter", "FORWARD", 1, "-i", "eth9", "-j", "ACCEPT")
	ipt.Append("filter", "FORWARD", "-o", "docker0", "-j", "DOCKER")
	if err := e.Reconcile(ctx, v); err != nil {
		t.Fatal(err)
	}
	fwd := ipt.chains["filter/FORWARD"]
	want := []string{"-j DOCKER-USER", "-j DOCKER-ISOLATION-STAGE-1", "-i eth9 -j ACCEPT",
		"-o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "-o docker0 -j DOCKER",
		"-i docker0 ! -o docker0 -j ACCEPT", "-i docker0 -o docker0 -j ACCEPT"}
	if !slices.Equal(fwd, want) {
		t.Errorf("FORWARD = %q\nwant %q", fwd, want)
	}
}

func TestCleanupRestoresForwarding(t *testing.T) {
	ipt := newFakeIPT()
	e := newFakeEnforcer(t, ipt, t.TempDir())
	ctx := context.Background()
	if err := e.Reconcile(ctx, network.View{Networks: []*network.Network{refDefault, refNoICC}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.readSysctl("net/ipv4/ip_forward"); v != "1" {
		t.Errorf("ip_forward = %s after start, want 1", v)
	}
	if err := e.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := ipt.save(), Save(Ruleset{}, "ACCEPT"); got != want {
		t.Errorf("after cleanup:\n%s", lineDiff(want, got))
	}
	if v, _ := e.readSysctl("net/ipv4/ip_forward"); v != "0" {
		t.Errorf("ip_forward = %s after cleanup, want 0", v)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
