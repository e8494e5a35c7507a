// Package sysctl reads and writes kernel parameters under /proc/sys (or
// another root, for tests) of the current network namespace.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Root is where the sysctl tree lives.
const Root = "/proc/sys"

// Read returns the value of name ("net/ipv4/ip_forward") below root.
func Read(root, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, name))
	return strings.TrimSpace(string(b)), err
}

// Write sets name below root to v.
func Write(root, name, v string) error {
	if err := os.WriteFile(filepath.Join(root, name), []byte(v), 0o644); err != nil {
		return fmt.Errorf("set %s: %w", strings.ReplaceAll(name, "/", "."), err)
	}
	return nil
}
