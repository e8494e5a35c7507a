package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/bpfnet/bpfnet/api/server"
	"github.com/bpfnet/bpfnet/compat"
	"github.com/bpfnet/bpfnet/datapath"
	"github.com/bpfnet/bpfnet/dockerdriver"
	"github.com/bpfnet/bpfnet/internal/version"
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
	store := network.NewStore(cfg.StateDir)
	if cfg.Cleanup {
		return cleanup(ctx, cfg, log, store)
	}
	// Refuse early, before touching anything, if another daemon serves
	// the socket; the socket itself only appears once this one serves.
	for _, s := range []string{cfg.Socket, cfg.DockerPlugin} {
		if err := server.CheckSocketFree(s); s != "" && err != nil {
			return err
		}
	}
	uplinks, err := uplinks(cfg)
	if err != nil {
		return err
	}
	// What would fail later fails now, before the host is touched.
	if err := preflight(cfg, log); err != nil {
		return err
	}
	sel, err := selectDatapath(ctx, cfg, uplinks, log)
	if err != nil {
		return err
	}
	defer sel.close(log)
	mgr := network.NewManager(log, network.NetlinkHost{}, sel.enf, store)
	var ready atomic.Bool
	lv := &live{ctx: ctx, log: log, cfg: cfg, model: mgr, enf: sel.enf, ready: ready.Load}
	if err := lv.startMetrics(cfg.MetricsAddr, cfg.PerEndpoint); err != nil {
		return err
	}
	def := cfg.defaultNetwork(cfg.DefaultNetwork)
	if err := mgr.Start(ctx, def); err != nil {
		return defaultNetworkError(err)
	}
	if err := mgr.WatchEndpoints(ctx); err != nil {
		return err
	}
	if r, ok := sel.enf.(network.Runner); ok {
		if err := r.Run(ctx); err != nil {
			return err
		}
	}
	var up atomic.Pointer[[]string]
	up.Store(&uplinks)
	if len(cfg.Uplinks) == 0 {
		if err := followDefaultRoutes(ctx, log, sel.enf, &up); err != nil {
			return err
		}
	}
	l, err := server.Listen(cfg.Socket, cfg.SocketGID)
	if err != nil {
		return err
	}
	defer l.Close()
	srv := server.New(log, mgr, sel.enf, server.Info{Version: version.Version, DatapathReason: sel.reason, StateDir: cfg.StateDir,
		Uplinks: func() []string { return *up.Load() }, Warnings: sel.warnings, Cgroup: sel.cgroup,
		Render: func(v network.View, ipv6 bool) string {
			rs := compat.Render(v, cfg.ChainPrefix, compat.Hairpin)
			if ipv6 {
				return compat.Save6(rs, compat.ForwardPolicy(cfg.StateDir, true))
			}
			return compat.Save(rs, compat.ForwardPolicy(cfg.StateDir, false))
		}})
	if cfg.DockerPlugin != "" {
		// Docker's calls go to the same manager as the API's.
		pl, err := server.Listen(cfg.DockerPlugin, -1) // Docker's engine runs as root
		if err != nil {
			return fmt.Errorf("docker plugin socket: %w", err)
		}
		defer pl.Close()
		// Spare veth pairs for the driver's endpoints; deferred after
		// sel.close, so they go while their programs are still loaded.
		sctx, stop := context.WithCancel(ctx)
		spared := mgr.KeepSpares(sctx, cfg.SpareVeths)
		defer func() { stop(); <-spared }()
		go func() {
			// At a stop the listener may close before Serve sees ctx end.
			if err := dockerdriver.New(log, mgr).Serve(ctx, pl); err != nil && ctx.Err() == nil {
				log.Error("docker plugin", "err", err)
			}
		}()
		log.Info("serving the Docker network driver", "socket", cfg.DockerPlugin, "driver", strings.TrimSuffix(filepath.Base(cfg.DockerPlugin), ".sock"))
	}
	ready.Store(true)
	lv.handleReloads()
	watchdog(ctx, log, func() bool { mgr.View(); return true })
	go func() {
		<-ctx.Done()
		notify(log, "STOPPING=1", statusLine("stopping"))
	}()
	v := mgr.View()
	notify(log, "READY=1", statusLine("serving %s: %d networks, %d endpoints", sel.enf.Name(), len(v.Networks), len(v.Endpoints)))
	log.Info("bpfnetd ready", "version", version.Version, "datapath", sel.enf.Name(), "reason", sel.reason, "socket", cfg.Socket, "uplinks", uplinks)
	err = srv.Serve(ctx, l)
	if sel.pinsEnd() {
		log.Warn("bpfnetd stopped; networks and endpoints stay, but the eBPF programs and maps end with the daemon (its bpf filesystem is private): traffic is not filtered until it starts again")
	} else {
		log.Info("bpfnetd stopped; networks, rules and programs stay in place")
	}
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
	if err := errors.Join(mgr.Cleanup(ctx), datapath.Leftover(log, ebpfConfig(cfg, up)).Cleanup(ctx)); err != nil {
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

// followDefaultRoutes keeps the uplinks those of the default routes, as
// they change, where --uplink does not name them: in up, for status, and
// in an enforcer that masquerades on its uplinks (Docker's MASQUERADE
// rule, which the iptables datapath keeps, applies on any interface).
func followDefaultRoutes(ctx context.Context, log *slog.Logger, enf network.Enforcer, up *atomic.Pointer[[]string]) error {
	return network.WatchDefaultRoutes(ctx, *up.Load(), func(now []string) {
		if f, ok := enf.(network.UplinkFollower); ok {
			if err := f.SetUplinks(now); err != nil {
				log.Error("move the uplink programs to the default routes' interfaces", "uplinks", now, "err", err)
			}
		}
		up.Store(&now)
		log.Info("uplinks follow the default routes", "uplinks", now)
	})
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

// defaultNetworkError adds to a failure to plan the default network the
// flags that fix it.
func defaultNetworkError(err error) error {
	if errors.Is(err, network.ErrPoolsExhausted) {
		return fmt.Errorf("%w: give the default network one with --bip (e.g. --bip=10.200.0.1/24), or turn it off with --default-network=false", err)
	}
	return err
}

// preflight reads the state and plans the default network without
// changing anything, so that a start bound to fail there (no free pool, a
// bad --bip, a state file that does not parse) fails before it mounts,
// loads or attaches anything.
func preflight(cfg Config, log *slog.Logger) error {
	mgr := network.NewManager(log, network.NetlinkHost{}, nil, network.NewStore(cfg.StateDir))
	if err := mgr.Load(); err != nil {
		return err
	}
	if !cfg.DefaultNetwork {
		return nil
	}
	if _, _, err := mgr.PlanDefault(cfg.defaultNetwork(true)); err != nil {
		return fmt.Errorf("default network: %w", defaultNetworkError(err))
	}
	return nil
}
