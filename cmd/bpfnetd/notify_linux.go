package main

import (
	"log/slog"
	"net"
	"os"
)

// notifyReady tells systemd (Type=notify) that the daemon is serving: it
// writes READY=1 to $NOTIFY_SOCKET when that is set.
func notifyReady(log *slog.Logger) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		log.Warn("notify systemd", "err", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		log.Warn("notify systemd", "err", err)
	}
}
