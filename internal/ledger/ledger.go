// Package ledger keeps a datapath's record of what it changed on the host
// outside its own objects (rules, sysctls, qdiscs), as JSON beside the
// state. A datapath saves the record before each change, so that after a
// crash the next start, or --cleanup, knows everything that may be
// installed and removes exactly that.
package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/bpfnet/bpfnet/internal/atomicfile"
)

// Load reads the ledger at path into v; a missing file leaves v as it is.
func Load(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ledger: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse ledger %s: %w", path, err)
	}
	return nil
}

// Save writes v as the ledger at path, atomically.
func Save(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode ledger: %w", err)
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600, nil)
}

// Exists reports whether there is a ledger at path.
func Exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Remove deletes the ledger at path; a missing one is fine.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
