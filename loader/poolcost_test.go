package loader

import (
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

var poolCost = flag.Bool("poolcost", false, "run TestPoolCost (issue 16: what a pool of pre-attached veth pairs would save)")

// TestPoolCost measures the idea issue 16 suggests for container start-up
// with TCX: keep veth pairs whose host side is already attached, and only
// hand the container side over when an endpoint takes one. Interleaved,
// it times (a) today's path: a veth pair created with its peer inside the
// container's namespace, then the host side's two TCX attachments, and
// (b) the pooled path: a pair created and attached beforehand, the clock
// running only for moving the peer into the namespace, renaming it and
// setting it up; and the same two for a hand-off endpoint (Docker's
// driver), whose peer the engine moves itself: (c) the pair made in the
// host's namespace, then the attachments, and (d) a pair made and
// attached beforehand, the clock running for renaming the peer and
// attaching again (the pinned links' programs replaced), as a spare is
// taken (network/spares.go). Run: go test ./loader -run TestPoolCost -poolcost -v
func TestPoolCost(t *testing.T) {
	if !*poolCost {
		t.Skip("run with -poolcost")
	}
	testnet.RequirePrivileges(t)
	host, ctr := testnet.NewNS(t, "host"), testnet.NewNS(t, "ctr")
	root := testnet.MountBPFFS(t, t.TempDir())
	c, err := Load(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := &Attacher{Root: root, Mode: ModeTCX, QdiscLedger: t.TempDir()}
	ctrNS, err := netns.GetFromPath(ctr.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer ctrNS.Close()
	in, err := netlink.NewHandleAt(ctrNS)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	attach := func(name string) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		ifc := Iface{Name: name, Index: l.Attrs().Index}
		if _, err := a.Attach(ifc, Ingress, c.FromContainer); err != nil {
			return err
		}
		_, err = a.Attach(ifc, Egress, c.ToContainer)
		return err
	}
	// pair makes a veth pair in the host's namespace and attaches its
	// host side.
	pair := func(name, peer string) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
			return err
		}
		return attach(name)
	}
	const n = 30
	var today, attaches, pooled, moves, handOff, handOffPooled []time.Duration
	err = host.Do(func() error {
		for i := range n {
			// (a) today's path.
			start := time.Now()
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("va%d", i)}, PeerName: fmt.Sprintf("eth%d", 2*i),
				PeerNamespace: netlink.NsFd(int(ctrNS))}
			if err := netlink.LinkAdd(v); err != nil {
				return err
			}
			attachStart := time.Now()
			if err := attach(v.Name); err != nil {
				return err
			}
			today = append(today, time.Since(start))
			attaches = append(attaches, time.Since(attachStart))

			// (b) pooled: made and attached before the clock starts.
			poolPeer := fmt.Sprintf("pool%d", i)
			if err := pair(fmt.Sprintf("vb%d", i), poolPeer); err != nil {
				return err
			}
			start = time.Now()
			peer, err := netlink.LinkByName(poolPeer)
			if err != nil {
				return err
			}
			moveStart := time.Now()
			if err := netlink.LinkSetNsFd(peer, int(ctrNS)); err != nil {
				return err
			}
			moves = append(moves, time.Since(moveStart))
			moved, err := in.LinkByName(poolPeer)
			if err != nil {
				return err
			}
			if err := in.LinkSetName(moved, fmt.Sprintf("eth%d", 2*i+1)); err != nil {
				return err
			}
			if err := in.LinkSetUp(moved); err != nil {
				return err
			}
			pooled = append(pooled, time.Since(start))

			// (c) a hand-off endpoint (Docker's driver: the engine moves
			// the peer itself, after Join): the pair made in the host's
			// namespace, then the host side's two attachments.
			start = time.Now()
			if err := pair(fmt.Sprintf("vc%d", i), fmt.Sprintf("hc%d", i)); err != nil {
				return err
			}
			handOff = append(handOff, time.Since(start))

			// (d) the same from a pool: made and attached beforehand; the
			// clock runs for renaming the peer and attaching again (the
			// pinned links' programs replaced).
			spare := fmt.Sprintf("vd%d", i)
			if err := pair(spare, fmt.Sprintf("pd%d", i)); err != nil {
				return err
			}
			start = time.Now()
			qp, err := netlink.LinkByName(fmt.Sprintf("pd%d", i))
			if err != nil {
				return err
			}
			if err := netlink.LinkSetName(qp, fmt.Sprintf("hd%d", i)); err != nil {
				return err
			}
			if err := attach(spare); err != nil {
				return err
			}
			handOffPooled = append(handOffPooled, time.Since(start))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	med := func(d []time.Duration) time.Duration { s := slices.Clone(d); slices.Sort(s); return s[len(s)/2] }
	t.Logf("median of %d interleaved: today's create+attach %v (of which the two TCX attachments %v), pooled hand-over %v (of which the move to the namespace %v): %.1f× less with a pool",
		n, med(today), med(attaches), med(pooled), med(moves), float64(med(today))/float64(med(pooled)))
	t.Logf("hand-off endpoints (the engine moves the peer): today's create+attach %v, pooled rename+re-attach %v: %.1f× less with a pool",
		med(handOff), med(handOffPooled), float64(med(handOff))/float64(med(handOffPooled)))
	// Detach before the namespaces go, so no pin outlives the test.
	host.Do(func() error {
		for i := range n {
			for _, name := range []string{fmt.Sprintf("va%d", i), fmt.Sprintf("vb%d", i), fmt.Sprintf("vc%d", i), fmt.Sprintf("vd%d", i)} {
				if l, err := netlink.LinkByName(name); err == nil {
					ifc := Iface{Name: name, Index: l.Attrs().Index}
					a.Detach(ifc, Ingress)
					a.Detach(ifc, Egress)
				}
			}
		}
		return nil
	})
}
