package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"sync/atomic"
	"time"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/compat"
	"github.com/bpfnet/bpfnet/datapath"
	"github.com/bpfnet/bpfnet/exporter"
	"github.com/bpfnet/bpfnet/loader"
	"github.com/bpfnet/bpfnet/network"
)

// run starts the daemon (or runs --check / --cleanup) and returns when ctx
// ends. Stopping leaves networks, endpoints and rules in place, as Docker
// does; only --cleanup removes them.
func run(ctx context.Context, cfg Config, log *slog.Logger, stdout io.Writer) error {
	if cfg.PrintConfig != "" {
		_, err := io.WriteString(stdout, cfg.PrintConfig)
		return err
	}
	if cfg.Check {
		return check(cfg, stdout)
	}
	store, err := network.NewStore(cfg.StateDir)
	if err != nil {
		return err
	}
	if cfg.Cleanup {
		return cleanup(ctx, cfg, log, store)
	}
	uplinks, err := uplinks(cfg)
	if err != nil {
		return err
	}
	sel, err := selectDatapath(ctx, cfg, uplinks, log)
	if err != nil {
		return err
	}
	defer sel.enf.Close()
	mgr := network.NewManager(log, network.NetlinkHost{}, sel.enf, store)
	l, err := api.Listen(cfg.Socket)
	if err != nil {
		return err
	}
	defer l.Close()
	obs := newObserver(log, mgr, sel)
	var ready atomic.Bool
	if cfg.MetricsAddr != "" {
		col := exporter.NewCollector(obs, exporter.Options{PerEndpoint: cfg.PerEndpoint, Version: version})
		if err := exporter.Serve(ctx, log, cfg.MetricsAddr, exporter.Handler(col, ready.Load)); err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
	}
	def := network.DefaultNetworkConfig{Enabled: cfg.DefaultNetwork, Bridge: cfg.Bridge, BIP: cfg.BIP}
	if err := mgr.Start(ctx, def); err != nil {
		return err
	}
	ready.Store(true)
	if sel.ebpf != nil {
		if err := sel.ebpf.WatchHostAddrs(ctx); err != nil {
			return err
		}
		sel.ebpf.RunGC(ctx, 30*time.Second)
		if err := obs.runEvents(ctx); err != nil {
			return err
		}
	}
	status := func() api.Status {
		v := mgr.View()
		s := api.Status{Version: version, Datapath: sel.enf.Name(), DatapathReason: sel.reason, StateDir: cfg.StateDir,
			Uplinks: uplinks, Networks: len(v.Networks), Endpoints: len(v.Endpoints)}
		if sel.compat != nil {
			s.ChainPrefix = sel.compat.Prefix()
		}
		if sel.ebpf != nil {
			s.Attach, s.BPFFS = sel.ebpf.AttachMode(), cfg.BPFFS
			for _, a := range sel.ebpf.Attachments() {
				s.Attachments = append(s.Attachments, api.Attachment(a))
			}
			if st, err := sel.ebpf.Stats(); err == nil {
				s.Stats = st
			} else {
				log.Error("read datapath stats", "err", err)
			}
		}
		return s
	}
	render := func() string {
		policy := "ACCEPT"
		if sel.compat != nil && sel.compat.ForwardPolicySet() {
			policy = "DROP"
		}
		prefix := cfg.ChainPrefix
		return compat.Save(compat.Render(mgr.View(), prefix, compat.Hairpin), policy)
	}
	d := api.Daemon{Status: status, Render: render, Counters: obs.EndpointCounters}
	if sel.ebpf != nil {
		d.Monitor = obs.subscribe
		d.NAT = func() ([]api.NATEntry, error) {
			entries, err := sel.ebpf.NATEntries()
			out := make([]api.NATEntry, 0, len(entries))
			for _, e := range entries {
				out = append(out, api.NATEntry{Kind: e.Kind, Proto: e.Proto, Container: e.Container.String(), Translated: e.Translated.String(),
					Remote: e.Remote.String(), State: e.State, AgeSec: e.Age.Seconds(), IdleSec: e.Idle.Seconds()})
			}
			return out, err
		}
	}
	srv := api.NewServer(log, mgr, d)
	notifyReady(log)
	log.Info("bpfnetd ready", "version", version, "datapath", sel.enf.Name(), "reason", sel.reason, "socket", cfg.Socket, "uplinks", uplinks)
	err = api.Serve(ctx, l, srv.Handler())
	log.Info("bpfnetd stopped; networks, rules and programs stay in place")
	return err
}

// cleanup removes bpfnet's interfaces, both datapaths' rules, programs and
// pins, and the state.
func cleanup(ctx context.Context, cfg Config, log *slog.Logger, store *network.Store) error {
	enf, err := compat.New(log, cfg.ChainPrefix, cfg.StateDir)
	if err != nil {
		return err
	}
	mgr := network.NewManager(log, network.NetlinkHost{}, enf, store)
	if err := mgr.Load(); err != nil {
		return err
	}
	up, _ := uplinks(cfg)
	if err := errors.Join(mgr.Cleanup(ctx), datapath.Cleanup(log, ebpfConfig(cfg, up))); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	log.Info("cleanup done: removed bpfnet's interfaces, rules, programs and state")
	return nil
}

func uplinks(cfg Config) ([]string, error) {
	if len(cfg.Uplinks) > 0 {
		return cfg.Uplinks, network.CheckLinks(cfg.Uplinks)
	}
	return network.DefaultRouteLinks()
}

// check reports whether the daemon could run here and what it would do.
func check(cfg Config, w io.Writer) error {
	ok := true
	say := func(good bool, format string, a ...any) {
		mark := "ok  "
		if !good {
			mark, ok = "FAIL", false
		}
		fmt.Fprintf(w, "%s %s\n", mark, fmt.Sprintf(format, a...))
	}
	if cfg.Datapath != "iptables" {
		mode, err := loader.Probe(cfg.TCAttach)
		switch {
		case err == nil:
			say(true, "datapath: %s selects ebpf (attach %s)", cfg.Datapath, mode)
		case cfg.Datapath == "auto":
			say(true, "datapath: auto selects iptables: the eBPF datapath cannot run here: %v", err)
		default:
			say(false, "datapath: ebpf cannot run here: %v", err)
		}
		say(datapath.CheckBPFFS(cfg.BPFFS) == nil, "bpffs %s %v", cfg.BPFFS, errText(datapath.CheckBPFFS(cfg.BPFFS)))
	} else {
		say(true, "datapath: iptables")
	}
	say(true, "chain prefix: %s", cfg.ChainPrefix)
	say(compat.ValidatePrefix(cfg.ChainPrefix) == nil, "chain prefix %q valid", cfg.ChainPrefix)
	path, err := exec.LookPath("iptables")
	say(err == nil, "iptables binary: %s", path)
	if err == nil {
		out, _ := exec.Command(path, "--version").Output()
		say(len(out) > 0, "iptables version: %s", trimNL(out))
	}
	up, err := uplinks(cfg)
	say(err == nil, "uplinks: %v %v", up, errText(err))
	store, err := network.NewStore(cfg.StateDir)
	say(err == nil, "state dir %s %v", cfg.StateDir, errText(err))
	if err == nil {
		mgr := network.NewManager(slog.New(slog.NewTextHandler(io.Discard, nil)), network.NetlinkHost{}, nil, store)
		err := mgr.Load()
		v := network.View{}
		if err == nil {
			v = mgr.View()
		}
		say(err == nil, "state: %d network(s), %d endpoint(s) to restore %v", len(v.Networks), len(v.Endpoints), errText(err))
	}
	if cfg.DefaultNetwork {
		say(true, "default network: bridge %s, address %s", cfg.Bridge, or(cfg.BIP, "first free Docker pool"))
	}
	say(true, "socket: %s (mode 0660)", cfg.Socket)
	if !ok {
		return fmt.Errorf("check failed")
	}
	return nil
}

func trimNL(b []byte) string {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return string(b)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return "(" + err.Error() + ")"
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
