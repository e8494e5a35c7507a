package dockerdriver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ebpflink "github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/bpfnet/bpfnet/internal/netlinksafe"
	"github.com/bpfnet/bpfnet/internal/testnet"
)

// driverClient calls a daemon's Docker driver over its socket, as
// Docker's engine does.
type driverClient struct {
	t *testing.T
	c *http.Client
}

func newDriverClient(t *testing.T, socket string) *driverClient {
	return &driverClient{t: t, c: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}}}}
}

// createNetwork creates network id on pool with gateway gw (both with
// their prefix length) as Docker's engine asks for it, with the driver's
// generic options (a JSON object's members).
func (d *driverClient) createNetwork(id, pool, gw, generic string) {
	d.t.Helper()
	d.ok("NetworkDriver.CreateNetwork", `{"NetworkID":"`+id+`","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{`+generic+`}},
		"IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"`+pool+`","Gateway":"`+gw+`"}],"IPv6Data":[]}`)
}

func (d *driverClient) ok(method, body string) map[string]any {
	d.t.Helper()
	resp, err := d.c.Post("http://plugin/"+method, "application/json", bytes.NewBufferString(body))
	if err != nil {
		d.t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out["Err"] != nil {
		d.t.Fatalf("%s: %d %v (%v)", method, resp.StatusCode, out, err)
	}
	return out
}

func dockerID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ownedLinks lists the host namespace's interfaces whose alias starts
// with prefix (bpfnet marks its own: "bpfnet/spare/", "bpfnet/ep/ID").
func ownedLinks(t *testing.T, host *testnet.NS, prefix string) []netlink.Link {
	t.Helper()
	var out []netlink.Link
	if err := host.Do(func() error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Alias, prefix) {
				out = append(out, l)
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// pinnedLinkIDs returns the ids of the TCX links pinned for an
// interface's two hooks (the daemon pins them by interface name).
func pinnedLinkIDs(t *testing.T, bpffs, ifname string) [2]ebpflink.ID {
	t.Helper()
	var ids [2]ebpflink.ID
	for i, hook := range []string{"ingress", "egress"} {
		l, err := ebpflink.LoadPinnedLink(filepath.Join(bpffs, "links", ifname+":"+hook), nil)
		if err != nil {
			t.Fatalf("pinned %s link of %s: %v", hook, ifname, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = info.ID
	}
	return ids
}

// TestSpareVeths: the daemon with its defaults (TCX) keeps veth pairs
// whose host side has the endpoint programs attached, once Docker's
// driver was asked for an endpoint. A later endpoint takes one: its host
// side is the spare with the very links attached before the request (so
// no attachment waited), its container side named and addressed as the
// driver answered, and its policy enforced like any endpoint's (same
// network reachable, another network not). A stopped daemon leaves no
// spare and no pin of one. The test moves the container sides into
// namespaces itself, as Docker's engine does after Join.
//
// --bpffs on a mount of the test (PinBPFFS): the test reads the pinned
// links.
func TestSpareVeths(t *testing.T) {
	testnet.RequirePrivileges(t)
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host)
	d.DockerDriver()
	bpffs := d.PinBPFFS()
	d.Start()
	drv := newDriverClient(t, d.PluginSocket)

	type container struct {
		ns   *testnet.NS
		addr netip.Addr
	}
	// endpoint asks the driver for an endpoint on network id, joins it
	// and moves and configures the container side as Docker would.
	endpoint := func(netID, addr, gw string) (container, string) {
		epID := dockerID()
		out := drv.ok("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Interface":{"Address":"`+addr+`"},"Options":{}}`)
		mac := out["Interface"].(map[string]any)["MacAddress"].(string)
		join := drv.ok("NetworkDriver.Join", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","SandboxKey":"/x","Options":{}}`)
		src := join["InterfaceName"].(map[string]any)["SrcName"].(string)
		hosts := ownedLinks(t, topo.Host, "bpfnet/ep/"+epID)
		if len(hosts) != 1 {
			t.Fatalf("endpoint %s: %d host sides marked as its", epID[:12], len(hosts))
		}
		c := container{ns: testnet.NewNS(t, "ctr"), addr: netip.MustParsePrefix(addr).Addr()}
		topo.Host.MustRun(t, "ip", "link", "set", src, "netns", c.ns.Path)
		c.ns.MustRun(t, "ip", "link", "set", src, "name", "eth0")
		c.ns.MustRun(t, "ip", "addr", "add", addr, "dev", "eth0")
		if got, _ := link(t, c.ns, "eth0"); got != mac {
			t.Errorf("container side's MAC %s, the driver answered %s", got, mac)
		}
		c.ns.MustRun(t, "ip", "link", "set", "eth0", "up")
		c.ns.MustRun(t, "ip", "route", "add", "default", "via", gw)
		return c, hosts[0].Attrs().Name
	}
	network := func(subnet, gw, generic string) string {
		id := dockerID()
		drv.createNetwork(id, subnet, gw+"/24", generic)
		return id
	}
	spares := func() []string {
		var names []string
		for _, l := range ownedLinks(t, topo.Host, "bpfnet/spare/") {
			names = append(names, l.Attrs().Name)
		}
		return names
	}
	// A spare is waiting once its programs are attached: its pair (and
	// alias) exists a grace period or two before that, so the daemon's
	// count of waiting spares says when the pairs are ready.
	waitSpares := func(n int) []string {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			st, err := d.Client.Status(context.Background())
			if s := spares(); err == nil && st.SpareVeths == n && len(s) == n {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("spares %v, want %d (--spare-veths' default)", spares(), n)
			}
		}
	}

	// netB's MTU is not a new veth's 1500: a spare gets its network's.
	netA, netB := network("10.88.1.0/24", "10.88.1.1", ""), network("10.88.2.0/24", "10.88.2.1", `"com.docker.network.driver.mtu":"1400"`)
	if s := spares(); len(s) != 0 {
		t.Fatalf("spares %v before the driver was asked for an endpoint", s)
	}
	c1, _ := endpoint(netA, "10.88.1.2/24", "10.88.1.1")
	before := map[string][2]ebpflink.ID{}
	for _, s := range waitSpares(4) {
		before[s] = pinnedLinkIDs(t, bpffs, s)
	}
	c2, host2 := endpoint(netA, "10.88.1.3/24", "10.88.1.1")
	ids, wasSpare := before[host2]
	if !wasSpare {
		t.Fatalf("the second endpoint's host side %s is none of the spares %v", host2, before)
	}
	if got := pinnedLinkIDs(t, bpffs, host2); got != ids {
		t.Errorf("%s's links %v, attached as a spare %v: the endpoint attached anew", host2, got, ids)
	}
	c3, host3 := endpoint(netB, "10.88.2.2/24", "10.88.2.1")
	if _, ok := before[host3]; !ok {
		t.Errorf("the third endpoint's host side %s is none of the spares %v", host3, before)
	}
	for _, mtu := range []string{topo.Host.MustRun(t, "ip", "-o", "link", "show", host3), c3.ns.MustRun(t, "ip", "-o", "link", "show", "eth0")} {
		if !strings.Contains(mtu, " mtu 1400 ") {
			t.Errorf("a spare on a network of MTU 1400: %s", mtu)
		}
	}
	if err := c2.ns.Ping(c1.addr, 3*time.Second); err != nil {
		t.Errorf("a spare's container to its network's neighbour: %v", err)
	}
	if err := c3.ns.Ping(c1.addr, time.Second); err == nil {
		t.Errorf("a spare's container reached another network's container: isolation not enforced")
	}
	if err := c1.ns.Ping(c2.addr, 3*time.Second); err != nil {
		t.Errorf("to a spare's container from its neighbour: %v", err)
	}

	left := waitSpares(4)
	if st, err := d.Client.Status(context.Background()); err != nil || st.SpareVeths != 4 || st.SparesTaken != 2 {
		t.Errorf("status: %d spares waiting, %d taken (%v); want 4 and 2", st.SpareVeths, st.SparesTaken, err)
	}
	d.Stop()
	if s := spares(); len(s) != 0 {
		t.Errorf("spares %v left by a stopped daemon", s)
	}
	for _, s := range left {
		for _, hook := range []string{"ingress", "egress"} {
			if _, err := os.Stat(filepath.Join(bpffs, "links", s+":"+hook)); err == nil {
				t.Errorf("pin of spare %s's %s link left by a stopped daemon", s, hook)
			}
		}
	}
}

// With legacy tc attachments (--tc-attach=tc, the mode under test), which
// wait for no grace period, the daemon keeps no spares: the first one it
// tries shows nothing is to gain, and goes, with its filters.
func TestNoSparesWithTC(t *testing.T) {
	testnet.RequirePrivileges(t)
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--tc-attach=tc")
	d.DockerDriver()
	d.Start()
	drv := newDriverClient(t, d.PluginSocket)
	netID, epID := dockerID(), dockerID()
	drv.createNetwork(netID, "10.88.3.0/24", "10.88.3.1/24", "")
	drv.ok("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Interface":{"Address":"10.88.3.2/24"},"Options":{}}`)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(d.Log(), "no spare veth pairs kept"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no word of spares in the log:\n%s", d.Log())
		}
	}
	if s := ownedLinks(t, topo.Host, "bpfnet/spare/"); len(s) != 0 {
		t.Errorf("%d spares kept with tc attachments", len(s))
	}
	if out := topo.Host.MustRun(t, "ip", "-o", "link"); strings.Contains(out, ": bps") {
		t.Errorf("a spare's peer is left:\n%s", out)
	}
	if st, err := d.Client.Status(context.Background()); err != nil || st.SpareVeths != 0 || st.SparesTaken != 0 {
		t.Errorf("status: %d spares waiting, %d taken (%v)", st.SpareVeths, st.SparesTaken, err)
	}
}
