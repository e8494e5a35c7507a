package main

import (
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bpfnet/bpfnet/api/server"
	"github.com/bpfnet/bpfnet/compat"
	"github.com/bpfnet/bpfnet/loader"
	"github.com/bpfnet/bpfnet/network"
)

// check predicts what start would do (datapath, mounts, uplinks, the state
// to restore, the default network's subnet) and whether it would succeed,
// changing nothing on the host: no mount, directory, socket or rule.
func check(cfg Config, w io.Writer) error {
	ok := true
	say := func(good bool, format string, a ...any) {
		mark := "ok  "
		if !good {
			mark, ok = "FAIL", false
		}
		fmt.Fprintf(w, "%s %s\n", mark, fmt.Sprintf(format, a...))
	}
	note := func(format string, a ...any) { fmt.Fprintf(w, "note %s\n", fmt.Sprintf(format, a...)) }

	store := network.NewStore(cfg.StateDir)
	mgr := network.NewManager(slog.New(slog.NewTextHandler(io.Discard, nil)), network.NetlinkHost{}, nil, store)
	loadErr := mgr.Load()
	ebpf := false
	switch {
	case cfg.Datapath != "iptables":
		mode, err := loader.Probe(cfg.TCAttach)
		if err == nil {
			err = checkMounts(cfg, say, note)
		}
		switch {
		case err == nil:
			ebpf = true
			say(true, "datapath: %s selects ebpf (attach %s)", cfg.Datapath, mode)
		case cfg.Datapath == "auto":
			say(true, "datapath: auto selects iptables: the eBPF datapath cannot run here: %v", err)
		default:
			say(false, "datapath: ebpf cannot run here: %v", err)
		}
	default:
		say(true, "datapath: iptables")
	}
	if !ebpf {
		say(compat.ValidatePrefix(cfg.ChainPrefix) == nil, "chain prefix %q valid", cfg.ChainPrefix)
	}
	path, err := exec.LookPath("iptables")
	say(err == nil, "iptables binary: %s", path)
	if err == nil {
		out, _ := exec.Command(path, "--version").Output()
		say(len(out) > 0, "iptables version: %s", trimNL(out))
	}
	up, err := uplinks(cfg)
	say(err == nil && len(up) > 0, "uplinks: %v %v", up, errText(err))
	err = loadErr
	if err == nil && !store.Exists() {
		say(true, "state dir %s: none yet, start creates it", cfg.StateDir)
	} else if err == nil {
		v := mgr.View()
		say(true, "state dir %s: %d network(s), %d endpoint(s) to restore", cfg.StateDir, len(v.Networks), len(v.Endpoints))
	} else {
		say(false, "state dir %s: %v", cfg.StateDir, err)
	}
	if cfg.DefaultNetwork && err == nil {
		n, exists, err := mgr.PlanDefault(cfg.defaultNetwork(true))
		switch {
		case err != nil:
			say(false, "default network: %v", defaultNetworkError(err))
		case exists:
			say(true, "default network: keeps bridge %s, %s", n.Bridge, addresses(n))
		default:
			say(true, "default network: creates bridge %s, %s", n.Bridge, addresses(n))
		}
	}
	if err := server.CheckSocketFree(cfg.Socket); err != nil {
		say(false, "socket: %v", err)
	} else {
		owners := "root only"
		if cfg.SocketGID != -1 {
			owners = fmt.Sprintf("root and group %d", cfg.SocketGID)
		}
		say(true, "socket: %s (mode 0660, %s), created once the daemon serves", cfg.Socket, owners)
	}
	switch err := server.CheckSocketFree(cfg.DockerPlugin); {
	case cfg.DockerPlugin == "":
		note("docker network driver: off (--docker-plugin is empty)")
	case err != nil:
		say(false, "docker network driver: %v", err)
	default:
		say(true, "docker network driver: %s (driver name %s)", cfg.DockerPlugin, strings.TrimSuffix(filepath.Base(cfg.DockerPlugin), ".sock"))
	}
	if !ok {
		return fmt.Errorf("check failed")
	}
	return nil
}

// addresses are a network's subnets and gateways, as check prints them.
func addresses(n network.Network) string {
	s := fmt.Sprintf("subnet %s, gateway %s", n.Subnet, n.Gateway)
	if n.DualStack() {
		s += fmt.Sprintf(", IPv6 subnet %s, gateway %s", n.Subnet6, n.Gateway6)
	}
	return s
}

// checkMounts predicts prepareEBPF: an error when the eBPF datapath could
// not get its bpffs.
func checkMounts(cfg Config, say func(bool, string, ...any), note func(string, ...any)) error {
	on, mount, err := loader.CheckBPFFS(cfg.BPFFS)
	switch {
	case err != nil:
		return fmt.Errorf("--bpffs: %w", err)
	case on:
		say(true, "bpffs: %s is on a bpf filesystem", cfg.BPFFS)
	case mount:
		say(true, "bpffs: none at %s; start mounts one", loader.BPFFSMount)
		if loader.PrivateMountNS() {
			note("this process has its own mount namespace: a bpffs mounted here ends with the daemon, and so do its pins (no lossless restart)")
		}
	}
	switch cfg.Cgroup {
	case "none":
		note("--cgroup=none: the host's own sockets cannot reach published ports")
	case "auto":
		if p, found := loader.FindCgroup2(); found {
			say(true, "cgroup v2: %s (socket programs for the host's own connections to published ports)", p)
		} else {
			say(true, "cgroup v2: none mounted; start mounts one below %s", loader.Cgroup2Mount)
		}
	default:
		err := loader.CheckCgroup(cfg.Cgroup)
		say(err == nil, "cgroup v2: %s %v", cfg.Cgroup, errText(err))
	}
	return nil
}
