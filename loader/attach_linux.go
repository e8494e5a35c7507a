package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/internal/netlinksafe"
)

// Hook is a TC hook of an interface.
type Hook string

const (
	Ingress Hook = "ingress"
	Egress  Hook = "egress"
)

// Attach modes.
const (
	ModeAuto = "auto" // TCX, or tc where the kernel has no TCX
	ModeTCX  = "tcx"
	ModeTC   = "tc" // clsact qdisc + cls_bpf direct-action filter
)

// ValidMode checks an attach mode.
func ValidMode(m string) error {
	switch m {
	case ModeAuto, ModeTCX, ModeTC:
		return nil
	}
	return fmt.Errorf("invalid attach mode %q: want auto, tcx or tc", m)
}

// Iface names an interface.
type Iface struct {
	Name  string
	Index int
}

// Legacy tc filters of bpfnet: this priority and handle, and a name with
// this prefix. Filters that do not carry both are never touched.
const (
	tcPriority   = 0xb9f
	tcHandle     = 1
	tcNamePrefix = "bpfnet_"
)

// Attacher attaches programs to interfaces in one mode.
type Attacher struct {
	// Root is the bpffs root; TCX links are pinned in Root/links.
	Root string
	// Mode is ModeAuto, ModeTCX or ModeTC.
	Mode string
	// QdiscLedger is the directory that records the clsact qdiscs bpfnet
	// created, so Detach deletes those (once empty) and no others.
	QdiscLedger string
}

func (a *Attacher) linkPin(ifc Iface, hook Hook) string {
	return filepath.Join(a.Root, "links", ifc.Name+":"+string(hook))
}

// Attach attaches prog to the interface's hook, replacing what bpfnet had
// there without a gap (TCX link update, tc filter replace), and returns
// the mode used.
func (a *Attacher) Attach(ifc Iface, hook Hook, prog *ebpf.Program) (string, error) {
	if a.Mode != ModeTC {
		err := a.attachTCX(ifc, hook, prog)
		if err == nil {
			// Switching from tc: drop our filter, now shadowed.
			if derr := a.detachTC(ifc, hook); derr != nil {
				return "", derr
			}
			return ModeTCX, nil
		}
		if a.Mode == ModeTCX || !errors.Is(err, link.ErrNotSupported) {
			return "", fmt.Errorf("attach %s to %s %s with TCX: %w", progName(prog), ifc.Name, hook, err)
		}
	}
	if err := a.attachTC(ifc, hook, prog); err != nil {
		return "", fmt.Errorf("attach %s to %s %s with tc: %w", progName(prog), ifc.Name, hook, err)
	}
	// Switching from TCX: the pinned link would run before the filter.
	if err := a.detachTCX(ifc, hook); err != nil {
		return "", err
	}
	return ModeTC, nil
}

func progName(p *ebpf.Program) string {
	if info, err := p.Info(); err == nil {
		return info.Name
	}
	return "program"
}

func tcxType(hook Hook) ebpf.AttachType {
	if hook == Ingress {
		return ebpf.AttachTCXIngress
	}
	return ebpf.AttachTCXEgress
}

// pinnedTCX opens the pinned link of an interface hook if it is still
// attached there; a stale pin (interface gone or replaced) is removed.
func (a *Attacher) pinnedTCX(ifc Iface, hook Hook) (link.Link, error) {
	if a.Root == "" {
		return nil, nil
	}
	path := a.linkPin(ifc, hook)
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned link %s: %w", path, err)
	}
	info, err := l.Info()
	if err == nil {
		if tcx := info.TCX(); tcx != nil && int(tcx.Ifindex) == ifc.Index && ebpf.AttachType(tcx.AttachType) == tcxType(hook) {
			return l, nil
		}
	}
	// A pin of another interface's link (an ifindex reused): replace it.
	err = l.Unpin()
	l.Close()
	if err != nil {
		return nil, fmt.Errorf("remove stale pinned link %s: %w", path, err)
	}
	return nil, nil
}

func (a *Attacher) attachTCX(ifc Iface, hook Hook, prog *ebpf.Program) error {
	l, err := a.pinnedTCX(ifc, hook)
	if err != nil {
		return err
	}
	if l != nil {
		defer l.Close()
		return l.Update(prog)
	}
	l, err = link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: prog, Attach: tcxType(hook), Anchor: link.Tail()})
	if err != nil {
		return err
	}
	defer l.Close()
	if a.Root == "" {
		return nil // unpinned (probes): the link ends with Close
	}
	path := a.linkPin(ifc, hook)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := l.Pin(path); err != nil {
		return fmt.Errorf("pin link: %w", err)
	}
	return nil
}

func (a *Attacher) detachTCX(ifc Iface, hook Hook) error {
	l, err := a.pinnedTCX(ifc, hook)
	if err != nil || l == nil {
		return err
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin link of %s %s: %w", ifc.Name, hook, err)
	}
	return nil
}

func tcParent(hook Hook) uint32 {
	if hook == Ingress {
		return netlink.HANDLE_MIN_INGRESS
	}
	return netlink.HANDLE_MIN_EGRESS
}

func (a *Attacher) attachTC(ifc Iface, hook Hook, prog *ebpf.Program) error {
	if err := a.ensureClsact(ifc); err != nil {
		return err
	}
	existing, err := a.tcFilter(ifc, hook, true)
	if err != nil {
		return err
	}
	if existing != nil && !strings.HasPrefix(existing.Name, tcNamePrefix) {
		return fmt.Errorf("filter priority %#x handle %d is taken by %q, not bpfnet's", tcPriority, tcHandle, existing.Name)
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: ifc.Index, Parent: tcParent(hook), Handle: tcHandle,
			Priority: tcPriority, Protocol: unix.ETH_P_ALL},
		Fd: prog.FD(), Name: tcNamePrefix + progName(prog), DirectAction: true,
	}
	return netlink.FilterReplace(f)
}

// tcFilter returns the filter at bpfnet's priority and handle (any owner
// when anyOwner is set, else only bpfnet's), or nil.
func (a *Attacher) tcFilter(ifc Iface, hook Hook, anyOwner bool) (*netlink.BpfFilter, error) {
	filters, err := netlinksafe.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifc.Index}}, tcParent(hook))
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil, nil // no clsact qdisc
		}
		return nil, fmt.Errorf("list tc filters of %s: %w", ifc.Name, err)
	}
	for _, f := range filters {
		bf, ok := f.(*netlink.BpfFilter)
		if !ok || f.Attrs().Priority != tcPriority || f.Attrs().Handle != tcHandle {
			continue
		}
		if anyOwner || strings.HasPrefix(bf.Name, tcNamePrefix) {
			return bf, nil
		}
	}
	return nil, nil
}

func (a *Attacher) detachTC(ifc Iface, hook Hook) error {
	f, err := a.tcFilter(ifc, hook, false)
	if err != nil || f == nil {
		return err
	}
	if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete tc filter of %s %s: %w", ifc.Name, hook, err)
	}
	return a.releaseClsact(ifc)
}

// Detach removes bpfnet's program from the interface's hook, whichever
// mode attached it.
func (a *Attacher) Detach(ifc Iface, hook Hook) error {
	return errors.Join(a.detachTCX(ifc, hook), a.detachTC(ifc, hook))
}

// Query reports how bpfnet's program is attached to a hook, and its id.
func (a *Attacher) Query(ifc Iface, hook Hook) (mode string, id ebpf.ProgramID, ok bool) {
	if l, err := a.pinnedTCX(ifc, hook); err == nil && l != nil {
		defer l.Close()
		if info, err := l.Info(); err == nil {
			return ModeTCX, info.Program, true
		}
	}
	if f, err := a.tcFilter(ifc, hook, false); err == nil && f != nil {
		return ModeTC, ebpf.ProgramID(f.Id), true
	}
	return "", 0, false
}

// PinnedLinks lists the interface hooks that have a pinned TCX link,
// as "ifname:hook".
func (a *Attacher) PinnedLinks() []string {
	entries, _ := os.ReadDir(filepath.Join(a.Root, "links"))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func clsact(index int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
}

// ensureClsact gives the interface a clsact qdisc unless it has one. It
// adds one and takes "exists" for an answer rather than listing qdiscs,
// which the kernel can only dump for every interface at once.
func (a *Attacher) ensureClsact(ifc Iface) error {
	ours, err := a.qdiscOurs(ifc.Name)
	if err != nil {
		return err
	}
	// Record before creating, so a crash in between cannot orphan it.
	if !ours {
		if err := a.recordQdisc(ifc.Name, true); err != nil {
			return err
		}
	}
	err = netlink.QdiscAdd(clsact(ifc.Index))
	if errors.Is(err, unix.EEXIST) && !ours {
		return a.recordQdisc(ifc.Name, false) // someone else's: not bpfnet's to delete
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc to %s: %w", ifc.Name, err)
	}
	return nil
}

// releaseClsact deletes the clsact qdisc of an interface if bpfnet created
// it and no filter (of anyone) is left on it.
func (a *Attacher) releaseClsact(ifc Iface) error {
	ours, err := a.qdiscOurs(ifc.Name)
	if err != nil || !ours {
		return err
	}
	dummy := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifc.Index}}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		if fs, err := netlinksafe.FilterList(dummy, parent); err != nil || len(fs) > 0 {
			return nil
		}
	}
	if err := netlink.QdiscDel(clsact(ifc.Index)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete clsact qdisc of %s: %w", ifc.Name, err)
	}
	return a.recordQdisc(ifc.Name, false)
}

// The qdisc ledger (QdiscLedger) is a directory with one empty file per
// interface whose clsact qdisc bpfnet created, so recording one costs
// the same however many there are. (Interface names cannot contain '/'
// and are never "." or "..".)

func (a *Attacher) qdiscOurs(ifname string) (bool, error) {
	if a.QdiscLedger == "" {
		return false, nil
	}
	_, err := os.Stat(filepath.Join(a.QdiscLedger, ifname))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

func (a *Attacher) recordQdisc(ifname string, ours bool) error {
	if a.QdiscLedger == "" {
		return nil
	}
	path := filepath.Join(a.QdiscLedger, ifname)
	if !ours {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		os.Remove(a.QdiscLedger) // once empty, no ledger is left behind
		return nil
	}
	if err := os.MkdirAll(a.QdiscLedger, 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, nil, 0o600)
}
