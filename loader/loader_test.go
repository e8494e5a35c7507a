package loader

import (
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// A program the verifier rejects is reported with the verifier's log, not
// just "permission denied".
func TestVerifierLogReported(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (bpf) and CI is set")
		}
		t.Skip("needs root")
	}
	// Reads R2 before anything wrote it: the verifier refuses.
	_, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Reg(asm.R0, asm.R2),
		asm.Return(),
	}})
	if err == nil {
		t.Fatal("the kernel accepted a program reading an uninitialised register")
	}
	msg := loadError(err, "/sys/fs/bpf/x").Error()
	if !strings.Contains(msg, "verifier rejected") || !strings.Contains(msg, "R2 !read_ok") {
		t.Errorf("error lacks the verifier log: %s", msg)
	}
}
