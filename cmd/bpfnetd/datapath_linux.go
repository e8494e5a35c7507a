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

// enforcer is the datapath the daemon runs.
type enforcer interface {
	network.Enforcer
	Close() error
}

// selected is the outcome of choosing a datapath: the enforcer, why it was
// chosen, and what came with it.
type selected struct {
	enf    enforcer
	reason string // why this datapath (auto mode)
	// cgroup is the cgroup v2 directory of the socket programs ("" when
	// the host's own sockets cannot reach published ports).
	cgroup string
	// warnings are shown by the log at start and by `bpfnet status`.
	warnings []string
	// mounts are the file systems bpfnetd mounted for the datapath.
	mounts []loader.Mount
}

func (s *selected) warn(log *slog.Logger, msg string) {
	log.Warn(msg)
	s.warnings = append(s.warnings, msg)
}

// pinsEnd reports whether the pins live in a bpffs that ends with the
// daemon.
func (s *selected) pinsEnd() bool {
	for _, m := range s.mounts {
		if m.Path == loader.BPFFSMount && m.Private {
			return true
		}
	}
	return false
}

// close releases the enforcer and the mounts nobody else can see.
func (s *selected) close(log *slog.Logger) {
	if s.enf != nil {
		s.enf.Close()
	}
	for _, m := range s.mounts {
		if err := m.Release(); err != nil {
			log.Warn("release mount", "path", m.Path, "err", err)
		}
	}
}

func ebpfConfig(cfg Config, uplinks []string) datapath.Config {
	return datapath.Config{Root: cfg.BPFFS, StateDir: cfg.StateDir, AttachMode: cfg.TCAttach, Uplinks: uplinks,
		NATPorts: cfg.NATPorts, ForwardRule: cfg.ForwardRule}
}

// prepareEBPF makes the file systems the eBPF datapath needs available:
// the bpffs of the pins (mounted at /sys/fs/bpf when none is there; an
// error when that is impossible) and, for --cgroup=auto, the host's cgroup
// v2 hierarchy (mounted under /run/bpfnet when none is there; without it
// the datapath runs and only the host's own sockets cannot reach published
// ports, which the returned selection's warnings say).
func prepareEBPF(cfg Config, s *selected, log *slog.Logger) error {
	m, err := loader.EnsureBPFFS(cfg.BPFFS)
	if err != nil {
		return fmt.Errorf("--bpffs: %w", err)
	}
	if m.Mounted {
		s.mounts = append(s.mounts, m)
		log.Info("mounted a bpf filesystem for the pins", "path", m.Path)
	}
	if m.Private {
		s.warn(log, fmt.Sprintf("the bpf filesystem bpfnetd mounted at %s lives in the daemon's own mount namespace: "+
			"pinned programs and maps end with the daemon, so a restart briefly interrupts enforcement and drops tracked flows "+
			"(mount a bpffs at %s in the host's mount namespace, or run bpfnetd there, for lossless restarts)", m.Path, loader.BPFFSMount))
	}
	switch cfg.Cgroup {
	case "none":
		s.warn(log, "--cgroup=none: the host's own sockets cannot reach published ports (127.0.0.1:PORT, host addresses)")
	case "auto":
		cg, err := loader.EnsureCgroup2()
		if err != nil {
			s.warn(log, fmt.Sprintf("no cgroup v2 hierarchy and none can be mounted (%v): the host's own sockets cannot reach published ports", err))
			return nil
		}
		if cg.Mounted {
			s.mounts = append(s.mounts, cg)
			log.Info("mounted the cgroup v2 hierarchy for the socket programs", "path", cg.Path)
		}
		s.cgroup = cg.Path
	default:
		if err := loader.CheckCgroup(cfg.Cgroup); err != nil {
			return fmt.Errorf("--cgroup: %w", err)
		}
		s.cgroup = cfg.Cgroup
	}
	return nil
}

// selectDatapath builds the enforcer --datapath asks for. auto probes the
// kernel (load the programs, attach one to a veth in a scratch namespace)
// and the file systems the datapath needs, and falls back to iptables,
// logging why. What another datapath left behind from an earlier run is
// removed, so two never enforce at once.
func selectDatapath(ctx context.Context, cfg Config, uplinks []string, log *slog.Logger) (*selected, error) {
	choice, reason := cfg.Datapath, "--datapath="+cfg.Datapath
	s := &selected{}
	if choice != "iptables" {
		mode, err := loader.Probe(cfg.TCAttach)
		if err == nil {
			err = prepareEBPF(cfg, s, log)
		}
		switch {
		case err != nil && choice == "auto":
			choice, reason = "iptables", fmt.Sprintf("auto: the eBPF datapath cannot run here: %v", err)
			log.Warn("eBPF datapath not available, using iptables", "reason", err)
			s.close(log)
			s = &selected{}
		case err != nil:
			s.close(log)
			return nil, fmt.Errorf("eBPF datapath: %w", err)
		case choice == "auto":
			choice, reason = "ebpf", fmt.Sprintf("auto: the kernel loads and attaches the programs (%s)", mode)
		}
	}
	s.reason = reason
	var others []network.Cleaner
	switch choice {
	case "ebpf":
		dc := ebpfConfig(cfg, uplinks)
		dc.Cgroup = s.cgroup
		e, err := datapath.New(log, dc)
		if err != nil {
			s.close(log)
			return nil, fmt.Errorf("eBPF datapath: %w", err)
		}
		s.enf = e
		others = append(others, compat.Leftover(log, cfg.ChainPrefix, cfg.StateDir))
	default:
		c, err := compat.New(log, cfg.ChainPrefix, cfg.StateDir)
		if err != nil {
			return nil, err
		}
		s.enf = c
		others = append(others, datapath.Leftover(log, ebpfConfig(cfg, uplinks)))
	}
	for _, o := range others {
		if !o.Leftovers() {
			continue
		}
		log.Info("removing what the other datapath left from an earlier run")
		if err := o.Cleanup(ctx); err != nil {
			s.close(log)
			return nil, fmt.Errorf("remove the other datapath's leftovers: %w", err)
		}
	}
	return s, nil
}
