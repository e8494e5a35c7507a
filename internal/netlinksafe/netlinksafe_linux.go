// Package netlinksafe is the only place bpfnet dumps kernel tables over
// netlink (links, addresses, routes, tc filters). A dump that races with a
// change of the same table ends with NLM_F_DUMP_INTR and a result that may
// miss or repeat entries; vishvananda/netlink returns what it got together
// with ErrDumpInterrupted. These wrappers repeat such a dump, as the CNI
// plugins' pkg/netlinksafe does, so no caller acts on a partial list. The
// linter (.golangci.yml) bans the raw calls everywhere else.
package netlinksafe

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// attempts bounds the retries; a table that changes this often is
// reported rather than read forever.
const attempts = 10

func retry[T any](dump func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range attempts {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// LinkList lists the namespace's interfaces.
func LinkList() ([]netlink.Link, error) {
	return retry(netlink.LinkList) //nolint:forbidigo // the wrapper
}

// AddrList lists the addresses of link (nil: every interface) in family.
func AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return retry(func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) }) //nolint:forbidigo // the wrapper
}

// RouteList lists the routes of the main table through link (nil: all) in
// family.
func RouteList(link netlink.Link, family int) ([]netlink.Route, error) {
	return retry(func() ([]netlink.Route, error) { return netlink.RouteList(link, family) }) //nolint:forbidigo // the wrapper
}

// FilterList lists link's tc filters under parent.
func FilterList(link netlink.Link, parent uint32) ([]netlink.Filter, error) {
	return retry(func() ([]netlink.Filter, error) { return netlink.FilterList(link, parent) }) //nolint:forbidigo // the wrapper
}

// AddrListAt lists, through h (a handle in another namespace), link's
// addresses in family.
func AddrListAt(h *netlink.Handle, link netlink.Link, family int) ([]netlink.Addr, error) {
	return retry(func() ([]netlink.Addr, error) { return h.AddrList(link, family) }) //nolint:forbidigo // the wrapper
}

// RouteListFiltered lists, through h (a handle in another namespace), the
// routes of family that match filter on the fields filterMask names.
func RouteListFiltered(h *netlink.Handle, family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error) {
	return retry(func() ([]netlink.Route, error) { return h.RouteListFiltered(family, filter, filterMask) }) //nolint:forbidigo // the wrapper
}

// IsDefaultRoute reports whether r is a default route. The netlink library
// reports one with Dst nil or, depending on how it was added and read
// back, Dst 0.0.0.0/0 (::/0).
func IsDefaultRoute(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}
