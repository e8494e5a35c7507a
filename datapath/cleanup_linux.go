package datapath

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bpfnet/bpfnet/loader"
	"github.com/bpfnet/bpfnet/network"
)

// Leftover is what an eBPF datapath with this configuration may have left
// on the host (attachments, pins, the FORWARD rule, ip_forward), for the
// iptables datapath to remove at start and for --cleanup. It needs no
// bpf() syscall, so it also runs where the eBPF datapath cannot.
func Leftover(log *slog.Logger, cfg Config) network.Cleaner { return leftover{log: log, cfg: cfg} }

type leftover struct {
	log *slog.Logger
	cfg Config
}

func ledgerPath(stateDir string) string { return filepath.Join(stateDir, "ebpf.json") }

func qdiscLedger(stateDir string) string { return filepath.Join(stateDir, "tc-qdiscs") }

// Leftovers reports whether an eBPF datapath ran with this configuration.
func (l leftover) Leftovers() bool {
	for _, p := range []string{ledgerPath(l.cfg.StateDir), qdiscLedger(l.cfg.StateDir), l.cfg.Root} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// Cleanup removes the uplinks' programs (tc filters and TCX links), every
// pin under the bpffs root (which detaches the remaining TCX links), the
// FORWARD rule and the ip_forward change. Bridges and veths go with their
// interfaces.
func (l leftover) Cleanup(context.Context) error {
	att := &loader.Attacher{Root: l.cfg.Root, Mode: loader.ModeAuto, QdiscLedger: qdiscLedger(l.cfg.StateDir)}
	var errs []error
	for _, name := range l.cfg.Uplinks {
		if ifc, err := ifaceOf(name); err == nil {
			errs = append(errs, att.Detach(ifc, loader.Ingress), att.Detach(ifc, loader.Egress))
		}
	}
	errs = append(errs, loader.Unpin(l.cfg.Root), restoreForwarding(ledgerPath(l.cfg.StateDir)))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.log.Info("eBPF datapath removed", "bpffs", l.cfg.Root)
	return nil
}
