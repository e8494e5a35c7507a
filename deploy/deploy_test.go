// Package deploy holds the files that install and run bpfnetd (systemd
// unit, default configuration, Grafana dashboard); its tests check them.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func makeIn(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", args...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func files(t *testing.T, dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// make install DESTDIR=… puts binaries, the CNI plugin, unit, config,
// man pages and completion scripts in place (the unit pointing at the
// installed binary); make uninstall leaves the folder empty. The installed unit passes systemd-analyze verify.
func TestInstallUninstall(t *testing.T) {
	dest := t.TempDir()
	makeIn(t, "install", "DESTDIR="+dest, "PREFIX=/usr")
	want := []string{"etc/bpfnet/bpfnetd.yaml", "usr/bin/bpfnet", "usr/bin/bpfnetd", "usr/lib/systemd/system/bpfnetd.service", "opt/cni/bin/bpfnet",
		"usr/share/man/man1/bpfnet.1", "usr/share/man/man1/bpfnet-network-ls.1", "usr/share/bash-completion/completions/bpfnet",
		"usr/share/zsh/site-functions/_bpfnet", "usr/share/fish/vendor_completions.d/bpfnet.fish"}
	got := strings.Join(files(t, dest), " ")
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("install lacks %s (has %s)", w, got)
		}
	}
	unit, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/bpfnetd.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/bpfnetd ") {
		t.Errorf("unit does not run the installed binary:\n%s", unit)
	}
	// verify checks ExecStart's binary exists, so the staged copy stands
	// in for /usr/bin/bpfnetd.
	staged := filepath.Join(t.TempDir(), "bpfnetd.service")
	os.WriteFile(staged, []byte(strings.ReplaceAll(string(unit), "/usr/bin/bpfnetd", filepath.Join(dest, "usr/bin/bpfnetd"))), 0o644)
	if out, err := exec.Command("systemd-analyze", "verify", staged).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The unit's sandboxing: systemd's own score (0 best, 10 worst) is no
	// worse than the 4.5 this unit reached (5.8 before UMask=,
	// ProtectKernelLogs=, MemoryDenyWriteExecute= and SystemCallFilter=).
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", staged).CombinedOutput()
	score := regexp.MustCompile(`Overall exposure level for bpfnetd\.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || score == nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	} else if v, _ := strconv.ParseFloat(string(score[1]), 64); v > 4.5 {
		t.Errorf("systemd-analyze security: exposure %v, want at most 4.5\n%s", v, out)
	}
	for _, want := range []string{"ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=", "Type=notify"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	// The installed config is what the daemon accepts.
	if out, err := exec.Command(filepath.Join(dest, "usr/bin/bpfnetd"), "--config", filepath.Join(dest, "etc/bpfnet/bpfnetd.yaml"), "--print-config").CombinedOutput(); err != nil || !strings.Contains(string(out), "datapath: auto") {
		t.Errorf("installed config: %v\n%s", err, out)
	}
	makeIn(t, "uninstall", "DESTDIR="+dest, "PREFIX=/usr")
	if left := files(t, dest); len(left) > 0 {
		t.Errorf("uninstall left %v", left)
	}
}
