package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/bpfnet/bpfnet/compat"
	"github.com/bpfnet/bpfnet/datapath"
	"github.com/bpfnet/bpfnet/loader"
	"github.com/bpfnet/bpfnet/network"
)

// enforcer is the datapath the daemon runs, with what status shows of it.
type enforcer interface {
	network.Enforcer
	Close() error
}

// selected is the outcome of choosing a datapath.
type selected struct {
	enf    enforcer
	reason string // why this datapath (auto mode)
	compat *compat.Enforcer
	ebpf   *datapath.Enforcer
}

func ebpfConfig(cfg Config, uplinks []string) datapath.Config {
	return datapath.Config{Root: cfg.BPFFS, StateDir: cfg.StateDir, AttachMode: cfg.TCAttach, Uplinks: uplinks,
		NATPorts: cfg.NATPorts, ForwardRule: cfg.ForwardRule}
}

// socketCgroup resolves --cgroup: auto is the root of the cgroup2 mount.
func socketCgroup(cfg Config) (string, error) {
	switch cfg.Cgroup {
	case "none":
		return "", nil
	case "auto":
		p, err := loader.DefaultCgroup()
		if err != nil {
			return "", fmt.Errorf("--cgroup=auto: %w (published ports stay unreachable from the host itself; --cgroup=none says so explicitly)", err)
		}
		return p, nil
	}
	return cfg.Cgroup, nil
}

// selectDatapath builds the enforcer --datapath asks for. auto probes the
// kernel (load the programs, attach one to a veth in a scratch namespace)
// and falls back to iptables, logging why. What another datapath left
// behind from an earlier run is removed, so two never enforce at once.
func selectDatapath(ctx context.Context, cfg Config, uplinks []string, log *slog.Logger) (*selected, error) {
	choice, reason := cfg.Datapath, "--datapath="+cfg.Datapath
	if choice == "auto" {
		mode, err := loader.Probe(cfg.TCAttach)
		if err != nil {
			choice, reason = "iptables", fmt.Sprintf("auto: the eBPF datapath cannot run here: %v", err)
			log.Warn("eBPF datapath not available, using iptables", "reason", err)
		} else {
			choice, reason = "ebpf", fmt.Sprintf("auto: the kernel loads and attaches the programs (%s)", mode)
		}
	}
	s := &selected{reason: reason}
	switch choice {
	case "ebpf":
		dc := ebpfConfig(cfg, uplinks)
		var err error
		if dc.Cgroup, err = socketCgroup(cfg); err != nil {
			return nil, err
		}
		e, err := datapath.New(log, dc)
		if err != nil {
			return nil, fmt.Errorf("eBPF datapath: %w", err)
		}
		s.enf, s.ebpf = e, e
		if compat.Leftovers(cfg.StateDir) {
			log.Info("removing the iptables rules of an earlier run in iptables mode")
			c, err := compat.New(log, cfg.ChainPrefix, cfg.StateDir)
			if err == nil {
				err = c.Cleanup(ctx)
			}
			if err != nil {
				e.Close()
				return nil, fmt.Errorf("remove the iptables datapath's rules: %w", err)
			}
		}
	default:
		c, err := compat.New(log, cfg.ChainPrefix, cfg.StateDir)
		if err != nil {
			return nil, err
		}
		s.enf, s.compat = closer{c}, c
		if dc := ebpfConfig(cfg, uplinks); datapath.Leftovers(dc) {
			log.Info("removing the eBPF datapath of an earlier run")
			if err := datapath.Cleanup(log, dc); err != nil {
				return nil, fmt.Errorf("remove the eBPF datapath: %w", err)
			}
		}
	}
	return s, nil
}

// closer gives the compat enforcer (which holds nothing open) a Close.
type closer struct{ *compat.Enforcer }

func (closer) Close() error { return nil }
