package netlinksafe

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// The netlink library reports a default route with Dst nil or 0.0.0.0/0
// (depending on how it was added and read back), and an IPv6 one with
// ::/0; all are default routes, which take no pool; a /1 is not one.
func TestIsDefaultRoute(t *testing.T) {
	cidr := func(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }
	for _, tc := range []struct {
		dst  *net.IPNet
		want bool
	}{
		{nil, true},
		{cidr("0.0.0.0/0"), true},
		{cidr("0.0.0.0/1"), false},
		{cidr("172.17.0.0/16"), false},
		{cidr("::/0"), true},
		{cidr("fd00::/8"), false},
	} {
		if got := IsDefaultRoute(netlink.Route{Dst: tc.dst}); got != tc.want {
			t.Errorf("IsDefaultRoute(%v) = %v, want %v", tc.dst, got, tc.want)
		}
	}
}
