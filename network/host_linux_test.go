package network

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// The netlink library reports a default route with Dst nil or 0.0.0.0/0
// (depending on how it was added and read back); both are default routes,
// which take no pool; a /1 is not one.
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
	} {
		if got := isDefaultRoute(netlink.Route{Dst: tc.dst}); got != tc.want {
			t.Errorf("isDefaultRoute(%v) = %v, want %v", tc.dst, got, tc.want)
		}
	}
}
