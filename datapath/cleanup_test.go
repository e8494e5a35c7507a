package datapath

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The clsact qdiscs an older version listed in tc-qdiscs.json are still
// known after an upgrade: one ledger file per interface, the JSON gone.
func TestQdiscLedgerMigrates(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, "tc-qdiscs.json"), []byte(`["up0","veth1234567"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	dir, err := qdiscLedger(state)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"up0", "veth1234567"}; !slices.Equal(names, want) {
		t.Errorf("ledger holds %q, want %q", names, want)
	}
	if _, err := os.Stat(filepath.Join(state, "tc-qdiscs.json")); !os.IsNotExist(err) {
		t.Errorf("tc-qdiscs.json still there: %v", err)
	}
	// A second start finds nothing to move.
	if again, err := qdiscLedger(state); err != nil || again != dir {
		t.Errorf("second call: %q, %v", again, err)
	}
}
