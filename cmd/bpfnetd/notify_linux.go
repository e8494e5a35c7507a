package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// systemd's notify protocol (Type=notify): READY once the daemon serves,
// STATUS lines saying what it does, RELOADING around a reload, STOPPING
// when it stops, and WATCHDOG pings while it is healthy (WatchdogSec=).
// Without $NOTIFY_SOCKET every call does nothing.

// notify sends state lines to systemd, logging a failure to send.
func notify(log *slog.Logger, state ...string) {
	if _, err := daemon.SdNotify(false, strings.Join(state, "\n")); err != nil {
		log.Warn("notify systemd", "err", err)
	}
}

func statusLine(format string, args ...any) string {
	return "STATUS=" + fmt.Sprintf(format, args...)
}

// watchdog pings systemd every half WatchdogSec for as long as healthy
// answers within that time; a daemon that hangs (its model locked) stops
// pinging and systemd restarts it.
func watchdog(ctx context.Context, log *slog.Logger, healthy func() bool) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	log.Info("systemd watchdog on", "interval", interval)
	t := time.NewTicker(interval / 2)
	go func() {
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			ok := make(chan bool, 1)
			go func() { ok <- healthy() }()
			select {
			case h := <-ok:
				if h {
					notify(log, daemon.SdNotifyWatchdog)
				}
			case <-time.After(interval / 2):
				log.Error("not answering systemd's watchdog: the network model did not respond", "within", interval/2)
			}
		}
	}()
}
