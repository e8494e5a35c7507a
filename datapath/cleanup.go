package datapath

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bpfnet/bpfnet/loader"
)

// Leftovers reports whether an eBPF datapath ran with this configuration
// and left attachments, pins or settings behind.
func Leftovers(cfg Config) bool {
	for _, p := range []string{filepath.Join(cfg.StateDir, "ebpf.json"), filepath.Join(cfg.StateDir, "tc-qdiscs.json"), filepath.Join(cfg.StateDir, "tc-qdiscs"), cfg.Root} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// Cleanup removes everything an eBPF datapath with this configuration
// installed: the uplinks' programs (tc filters and TCX links), every pin
// under the bpffs root (which detaches the remaining TCX links), the
// FORWARD rule and the ip_forward change. Bridges and veths go with their
// interfaces. It needs no bpf() syscall, so it also runs where the eBPF
// datapath cannot (when the daemon falls back to iptables).
func Cleanup(log *slog.Logger, cfg Config) error {
	path := filepath.Join(cfg.StateDir, "ebpf.json")
	var led ledger
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &led); err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
	}
	ledger, err := qdiscLedger(cfg.StateDir)
	if err != nil {
		return err
	}
	att := &loader.Attacher{Root: cfg.Root, Mode: loader.ModeAuto, QdiscLedger: ledger}
	var errs []error
	for _, name := range cfg.Uplinks {
		if ifc, err := ifaceOf(name); err == nil {
			errs = append(errs, att.Detach(ifc, loader.Ingress), att.Detach(ifc, loader.Egress))
		}
	}
	errs = append(errs, loader.Unpin(cfg.Root), restoreForwarding(led))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	log.Info("eBPF datapath removed", "bpffs", cfg.Root)
	return nil
}

// qdiscLedger returns the directory that records the clsact qdiscs the
// datapath created (loader.Attacher.QdiscLedger), first moving the names
// an older version kept in tc-qdiscs.json into it.
func qdiscLedger(stateDir string) (string, error) {
	dir := filepath.Join(stateDir, "tc-qdiscs")
	old := filepath.Join(stateDir, "tc-qdiscs.json")
	b, err := os.ReadFile(old)
	if errors.Is(err, fs.ErrNotExist) {
		return dir, nil
	}
	if err != nil {
		return "", err
	}
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return "", fmt.Errorf("read %s: %w", old, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(n)), nil, 0o600); err != nil {
			return "", err
		}
	}
	return dir, os.Remove(old)
}
