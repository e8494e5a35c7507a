package main

import (
	"strings"
	"testing"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

// Docker's words against a real daemon: connect attaches a namespace as
// ethN under its own name (NAME.NETWORK once the name is taken),
// disconnect detaches it, prune removes what has no endpoint but never
// the default network, and completion lists the daemon's names.
func TestConnectDisconnectPrune(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host)
	d.Start()
	c1 := testnet.NewNS(t, "c1")
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "--label", "team=a", "web")
	d.MustCLI("network", "create", "--subnet", "198.18.2.0/24", "db")
	d.MustCLI("network", "create", "--subnet", "198.18.3.0/24", "--aux-address", "router=198.18.3.2", "spare")

	d.MustCLI("network", "connect", "web", c1.Name)
	d.MustCLI("network", "connect", "--ip", "198.18.2.9", "db", c1.Name)
	if got := d.MustCLI("endpoint", "ls", "--format", "{{.Name}} {{.Network}} {{.IfName}} {{.IP}}"); got != c1.Name+" web eth0 198.18.1.2\n"+c1.Name+".db db eth1 198.18.2.9" &&
		got != c1.Name+".db db eth1 198.18.2.9\n"+c1.Name+" web eth0 198.18.1.2" {
		t.Errorf("endpoints after two connects:\n%s", got)
	}
	for _, want := range []string{"eth0", "198.18.1.2/24", "eth1", "198.18.2.9/24"} {
		if out := c1.MustRun(t, "ip", "-o", "addr", "show"); !strings.Contains(out, want) {
			t.Errorf("the namespace has no %s:\n%s", want, out)
		}
	}
	// The reserved address is never handed out: the first endpoint of
	// spare gets .3.
	d.MustCLI("network", "connect", "spare", c1.Name)
	if got := d.MustCLI("endpoint", "inspect", "-f", "{{.IP}}", c1.Name+".spare"); got != "198.18.3.3" {
		t.Errorf("first address of spare with router=198.18.3.2 reserved: %s, want 198.18.3.3", got)
	}
	if got := d.MustCLI("network", "inspect", "-f", "{{.Labels}} {{(index .IPAM.Config 0).AuxiliaryAddresses}}", "web", "spare"); got != "map[team:a] map[]\nmap[] map[router:198.18.3.2]" {
		t.Errorf("labels and aux addresses in inspect:\n%s", got)
	}
	d.MustCLI("network", "disconnect", "web", c1.Name)
	d.MustCLI("network", "disconnect", "spare", c1.Name)
	if out := c1.MustRun(t, "ip", "-o", "link", "show"); strings.Contains(out, "eth0") || !strings.Contains(out, "eth1") {
		t.Errorf("after disconnecting web: \n%s", out)
	}
	if _, errOut, code := d.CLI("network", "disconnect", "web", c1.Name); code != 1 || !strings.Contains(errOut, "is not connected") {
		t.Errorf("second disconnect: exit %d, %s", code, errOut)
	}
	if got := d.MustCLI("__complete", "network", "rm", "w"); !strings.HasPrefix(got, "web\n:4") {
		t.Errorf("completion of network rm w: %q", got)
	}
	if got := d.MustCLI("__complete", "endpoint", "inspect", ""); !strings.HasPrefix(got, c1.Name+".db\n:4") {
		t.Errorf("completion of endpoint inspect: %q", got)
	}

	// web and spare have no endpoint; db has one; bridge is the default.
	if got := d.MustCLI("network", "prune", "-f"); got != "Deleted Networks:\nweb\nspare" && got != "Deleted Networks:\nspare\nweb" {
		t.Errorf("prune printed %q", got)
	}
	if got := d.MustCLI("network", "ls", "--format", "{{.Name}}"); got != "bridge\ndb" && got != "db\nbridge" {
		t.Errorf("after prune: %q", got)
	}
}
