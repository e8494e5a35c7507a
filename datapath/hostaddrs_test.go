package datapath

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bpfnet/bpfnet/bpf"
)

// TestHostAddrs6: host_addrs6 holds every IPv6 address of the host but
// link-local ones; an uplink's IPv6 masquerade source is its first global
// address that is neither deprecated nor tentative; the address watcher
// follows additions and removals.
func TestHostAddrs6(t *testing.T) {
	w := newWorld(t, nil)
	ip := func(args ...string) { w.ns.MustRun(t, "ip", args...) }
	ip("addr", "add", "2001:db8:5::2/64", "dev", "vuplink", "nodad", "preferred_lft", "0")
	ip("addr", "add", "2001:db8:5::1/64", "dev", "vuplink", "nodad")
	ip("addr", "add", "fe80::5/64", "dev", "vuplink", "nodad")
	ip("addr", "add", "fd00:55::1/64", "dev", "vstranger", "nodad")
	h := &hostAddrs{log: slog.New(slog.DiscardHandler), coll: w.coll, uplinks: []string{"vuplink"}}
	must(t, w.ns.Do(h.sync))

	has := func(a string) bool {
		var v uint32
		return w.coll.HostAddrs6.Lookup(in6(netip.MustParseAddr(a)), &v) == nil
	}
	masq := func() string {
		var u bpf.BpfnetUplinkInfo
		must(t, w.coll.Uplinks.Lookup(uint32(w.uplink), &u))
		return addrOf6(u.Addr6).String()
	}
	for a, want := range map[string]bool{"2001:db8:5::1": true, "2001:db8:5::2": true, "fd00:55::1": true, "fe80::5": false} {
		if has(a) != want {
			t.Errorf("host_addrs6 has %s: %v, want %v", a, has(a), want)
		}
	}
	if got := masq(); got != "2001:db8:5::1" {
		t.Errorf("uplink's IPv6 masquerade address %s, want 2001:db8:5::1 (2001:db8:5::2 is deprecated)", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ch <-chan netlink.AddrUpdate
	must(t, w.ns.Do(func() (err error) { ch, err = h.subscribe(ctx); return err }))
	// In the namespace, as the daemon runs: the watcher looks the uplink up.
	go w.ns.Do(func() error { h.watch(ctx, ch); return nil })
	eventually := func(what string, ok func() bool) {
		t.Helper()
		for end := time.Now().Add(3 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("after 3 s: %s", what)
			}
		}
	}
	ip("addr", "add", "2001:db8:7::1/64", "dev", "vstranger", "nodad")
	eventually("a new address is a host address", func() bool { return has("2001:db8:7::1") })
	ip("addr", "add", "2001:db8:8::1/64", "dev", "vuplink", "nodad")
	ip("addr", "del", "2001:db8:5::1/64", "dev", "vuplink")
	eventually("a removed address is no host address", func() bool { return !has("2001:db8:5::1") })
	eventually("the uplink's next usable address is its masquerade source", func() bool { return masq() == "2001:db8:8::1" })
}
