package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CheckSocketFree returns an error when a live server answers on the
// socket at path (another daemon).
func CheckSocketFree(path string) error {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another bpfnetd is listening on %s", path)
	}
	return nil
}

// Listen opens the unix socket at path with mode 0660 (owner and group
// only: whoever can write to it controls the host's networking), owned by
// group gid when it is not -1. A stale socket file left by a dead daemon
// is replaced; a live one is an error. Closing the listener removes the
// socket file.
func Listen(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := CheckSocketFree(path); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	if gid != -1 {
		if err := SetSocketGroup(path, gid); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// SetSocketGroup gives the socket at path to group gid; -1 gives it back
// to the daemon's own group.
func SetSocketGroup(path string, gid int) error {
	if gid == -1 {
		gid = os.Getgid()
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("give socket %s to group %d: %w", path, gid, err)
	}
	return nil
}
