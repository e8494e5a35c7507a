// Package loader loads bpfnet's BPF collection, attaches its programs to
// interfaces (TCX first, a clsact qdisc with a cls_bpf filter where TCX is
// not available), pins maps and links under a bpffs root so enforcement
// survives daemon restarts, and probes what the kernel can do. It knows
// programs and interfaces, not networks.
package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/bpfnet/bpfnet/bpf"
)

// Options configure Load.
type Options struct {
	// Root is the bpffs directory for pins (maps/ and links/ below it).
	// Empty loads unpinned maps (BPF_PROG_TEST_RUN tests and probes).
	Root string
	// ForwardMark is the skb->mark bit set on passed packets (0: none).
	ForwardMark uint32
	// Constants overrides other `volatile const` knobs by name (tests use
	// it to shorten connection-table timeouts).
	Constants map[string]any
	// MaxEntries overrides the size of maps by name (tests use it to reach
	// a table's limit quickly).
	MaxEntries map[string]uint32
}

// Collection is the loaded programs and maps.
type Collection struct {
	bpf.BpfnetObjects
	// Replaced names the pinned maps an earlier version left in a layout
	// this one cannot use, and how they differed; Load replaced them with
	// empty maps (the daemon refills what its state describes).
	Replaced []string
}

// Load loads the collection. Maps pinned under Root by an earlier daemon
// are reused, so their contents (connection table, counters) survive.
// A program the verifier rejects is reported with the verifier's log.
func Load(opts Options) (*Collection, error) {
	spec, err := bpf.LoadBpfnet()
	if err != nil {
		return nil, fmt.Errorf("read BPF object: %w", err)
	}
	consts := map[string]any{"forward_mark": opts.ForwardMark}
	for k, v := range opts.Constants {
		consts[k] = v
	}
	for name, v := range consts {
		vs, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("BPF object has no constant %q", name)
		}
		if err := vs.Set(v); err != nil {
			return nil, fmt.Errorf("set BPF constant %s: %w", name, err)
		}
	}
	for name, n := range opts.MaxEntries {
		ms, ok := spec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("BPF object has no map %q", name)
		}
		ms.MaxEntries = n
	}
	var copts ebpf.CollectionOptions
	if opts.Root == "" {
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinNone
		}
	} else {
		dir := filepath.Join(opts.Root, "maps")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("bpffs root: %w", err)
		}
		copts.Maps.PinPath = dir
	}
	c := &Collection{}
	if opts.Root != "" {
		if c.Replaced, err = replaceIncompatible(spec, copts.Maps.PinPath); err != nil {
			return nil, err
		}
	}
	if err := spec.LoadAndAssign(&c.BpfnetObjects, &copts); err != nil {
		return nil, loadError(err, opts.Root)
	}
	return c, nil
}

// related are maps whose entries refer to each other's: replacing one but
// keeping the others would pair a new table with old entries (two
// containers sharing an external tuple, charges that never come back), so
// they are replaced together.
var related = [][]string{
	{"conntrack", "nat_fwd", "nat_rev", "ep_flows", "remote_flows", "frags", "peers", "stats"},
}

// replaceIncompatible unpins every map pinned in dir whose type, key,
// value, size or flags differ from spec, and the maps related to it, so
// Load creates them anew, and returns what it replaced. Programs attached
// by the earlier version keep their maps until the new programs replace
// them.
func replaceIncompatible(spec *ebpf.CollectionSpec, dir string) ([]string, error) {
	why := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(spec.Maps)) {
		ms := spec.Maps[name]
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		path := filepath.Join(dir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pinned map %s: %w", path, err)
		}
		diff := ms.Compatible(m)
		m.Close()
		if diff != nil {
			why[name] = diff.Error()
		}
	}
	for _, group := range related {
		for _, name := range group {
			if _, ok := why[name]; !ok {
				continue
			}
			for _, other := range group {
				if _, ok := why[other]; !ok {
					why[other] = "replaced with " + name
				}
			}
			break
		}
	}
	var replaced []string
	for _, name := range slices.Sorted(maps.Keys(why)) {
		path := filepath.Join(dir, name)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("replace pinned map %s: %w", path, err)
		}
		replaced = append(replaced, fmt.Sprintf("%s (%s)", name, why[name]))
	}
	return replaced, nil
}

// loadError explains a failed load; a verifier rejection carries the
// verifier's whole log.
func loadError(err error, root string) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("the kernel's verifier rejected a program: %+v", ve)
	}
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("load BPF maps: %w (maps pinned in %s come from an incompatible version; `bpfnetd --cleanup` removes them)", err, root)
	}
	return fmt.Errorf("load BPF collection: %w", err)
}

// Unpin removes every pin under root (maps and links), which detaches
// TCX links nobody else holds. Legacy tc filters are removed by Detach.
func Unpin(root string) error {
	if root == "" {
		return nil
	}
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("remove pins under %s: %w", root, err)
	}
	return nil
}
