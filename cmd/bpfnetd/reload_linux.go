package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/bpfnet/bpfnet/api/server"
	"github.com/bpfnet/bpfnet/exporter"
	"github.com/bpfnet/bpfnet/internal/version"
	"github.com/bpfnet/bpfnet/network"
)

// reloadable are the settings a reload (SIGHUP, `systemctl reload`)
// applies while the daemon runs. Any other setting that changed in the
// config file is logged as needing a restart: they decide how the
// datapath, the model and the sockets were set up.
var reloadable = []string{"metrics-addr", "metrics-per-endpoint", "group"}

// live is what a reload can change: the metrics listener, the
// collector's per-endpoint series, the API socket's group.
type live struct {
	ctx     context.Context
	log     *slog.Logger
	cfg     Config
	model   exporter.Model
	enf     network.Enforcer
	col     *exporter.Collector // nil until metrics are first on
	handler http.Handler
	stop    context.CancelFunc // ends the metrics listener
	ready   func() bool
}

// startMetrics serves the metrics at cfg.MetricsAddr (nothing when empty).
func (l *live) startMetrics(addr string, perEndpoint bool) error {
	if addr == "" {
		return nil
	}
	if l.col == nil {
		l.col = exporter.NewCollector(l.model, l.enf, exporter.Options{PerEndpoint: perEndpoint, Version: version.Version})
		l.handler = exporter.Handler(l.col, l.ready)
	}
	ctx, cancel := context.WithCancel(l.ctx)
	if err := exporter.Serve(ctx, l.log, addr, l.handler); err != nil {
		cancel()
		return fmt.Errorf("metrics listener: %w", err)
	}
	l.stop = cancel
	return nil
}

// handleReloads reloads on every SIGHUP until ctx ends.
func (l *live) handleReloads() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-l.ctx.Done():
				return
			case <-hup:
				notify(l.log, "RELOADING=1")
				status := l.reload()
				notify(l.log, "READY=1", statusLine("%s", status))
			}
		}
	}()
}

// reload reads the command line and the config file again and applies
// what can change at run time; it returns a one-line status.
func (l *live) reload() string {
	next, err := parseFlags(l.cfg.args, io.Discard)
	if err != nil {
		l.log.Error("reload: the configuration is not valid; nothing changed", "err", err)
		return "reload failed: " + err.Error()
	}
	var applied, restart []string
	for _, k := range slices.Sorted(maps.Keys(next.Settings)) {
		if next.Settings[k] == l.cfg.Settings[k] {
			continue
		}
		if !slices.Contains(reloadable, k) {
			restart = append(restart, k)
			continue
		}
		if err := l.apply(k, next); err != nil {
			l.log.Error("reload: setting not applied", "setting", k, "err", err)
			continue
		}
		applied = append(applied, k)
		l.cfg.Settings[k] = next.Settings[k]
	}
	if len(restart) > 0 {
		l.log.Warn("reload: these settings changed but only take effect when the daemon restarts", "settings", restart)
	}
	l.log.Info("configuration reloaded", "applied", applied, "need_restart", restart)
	return fmt.Sprintf("reloaded: applied %v, need a restart %v", applied, restart)
}

// apply applies one reloadable setting of next.
func (l *live) apply(setting string, next Config) error {
	switch setting {
	case "metrics-per-endpoint":
		l.cfg.PerEndpoint = next.PerEndpoint
		if l.col != nil {
			l.col.SetPerEndpoint(next.PerEndpoint)
		}
	case "group":
		if err := server.SetSocketGroup(l.cfg.Socket, next.SocketGID); err != nil {
			return err
		}
		l.cfg.SocketGID = next.SocketGID
	case "metrics-addr":
		// The new listener first: if it cannot listen, the old one stays.
		old := l.stop
		if err := l.startMetrics(next.MetricsAddr, l.cfg.PerEndpoint); err != nil {
			return err
		}
		if old != nil {
			old()
		}
		if next.MetricsAddr == "" {
			l.stop = nil
		}
		l.cfg.MetricsAddr = next.MetricsAddr
	}
	return nil
}
