package loader

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Probe checks by trying that this kernel can run the datapath: it loads
// the collection (unpinned, so the verifier checks every program) and
// attaches a program to a veth in a scratch network namespace with the
// given mode (ModeAuto tries TCX, then tc). It returns the mode that
// worked, or why nothing did. Nothing is left behind.
func Probe(mode string) (string, error) {
	c, err := Load(Options{})
	if err != nil {
		return "", err
	}
	defer c.Close()
	type result struct {
		mode string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// The thread enters the scratch namespace; if it cannot return to
		// the original one it stays locked and Go discards it.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- result{err: fmt.Errorf("probe: current netns: %w", err)}
			return
		}
		defer orig.Close()
		scratch, err := netns.New()
		if err != nil {
			done <- result{err: fmt.Errorf("probe: create scratch netns: %w", err)}
			return
		}
		m, err := attachInScratch(c, mode)
		scratch.Close()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{m, err}
	}()
	r := <-done
	return r.mode, r.err
}

func attachInScratch(c *Collection, mode string) (string, error) {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "probe0"}, PeerName: "probe1"}
	if err := netlink.LinkAdd(veth); err != nil {
		return "", fmt.Errorf("probe: create veth: %w", err)
	}
	l, err := netlink.LinkByName("probe0")
	if err != nil {
		return "", fmt.Errorf("probe: %w", err)
	}
	// No Root: the probe pins nothing; its TCX link is closed with the
	// namespace's veth.
	a := &Attacher{Mode: mode}
	return a.Attach(Iface{Name: "probe0", Index: l.Attrs().Index}, Ingress, c.FromContainer)
}
