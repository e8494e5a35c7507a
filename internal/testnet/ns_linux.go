// Package testnet builds test worlds entirely inside network namespaces the
// test creates: a "host" namespace where the daemon runs, container
// namespaces, and an "outside" namespace behind the host's uplink veth.
// Nothing here touches the machine's root namespace, and everything made is
// removed by t.Cleanup, also when the test fails.
package testnet

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// RequirePrivileges skips the test unless it runs as root; when CI is set a
// privileged test must run, so it fails instead.
func RequirePrivileges(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root (network namespaces, iptables) and CI is set")
	}
	t.Skip("needs root: network namespaces and iptables")
}

// NS is a named network namespace (/run/netns/NAME) made by a test.
type NS struct {
	Name    string
	Path    string
	deleted bool
}

// Delete deletes the namespace now, as a container runtime does when a
// container dies; the kernel destroys it (and the veths in it) once no
// process or socket holds it.
func (n *NS) Delete(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", n.Name, err, out)
	}
	n.deleted = true
}

// runID makes namespace names of one test process unique, so parallel
// runs on a shared machine never collide and leftovers are attributable.
var runID = func() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}()

var nsCount int

// NSName is a namespace name of this test process's own, unique, ending
// in role: what NewNS names its namespace, and a prefix for namespaces a
// script of the test makes.
func NSName(role string) string {
	nsCount++
	name := fmt.Sprintf("bpfnt-%s-%d-%s", runID, nsCount, role)
	if len(name) > 40 {
		name = name[:40]
	}
	return name
}

// NewNS creates a namespace whose name ends in role and deletes it when
// the test ends.
func NewNS(t testing.TB, role string) *NS {
	t.Helper()
	name := NSName(role)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name, Path: "/run/netns/" + name}
	t.Cleanup(func() {
		if ns.deleted {
			return
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	// Loopback up, as in any real container.
	ns.MustRun(t, "ip", "link", "set", "lo", "up")
	return ns
}

// NSAt is a named namespace the test did not make (/run/netns/NAME, a
// runtime's): usable like the test's, and left alone at the end.
func NSAt(path string) *NS {
	return &NS{Name: filepath.Base(path), Path: path, deleted: true}
}

// AttachNS returns the network namespace of a process (a container's) as
// an NS named after role (`ip netns attach`); the name goes when the test
// ends, the namespace with its process.
func AttachNS(t testing.TB, role string, pid int) *NS {
	t.Helper()
	name := NSName(role)
	if out, err := exec.Command("ip", "netns", "attach", name, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		t.Fatalf("ip netns attach %s %d: %v: %s", name, pid, err, out)
	}
	ns := &NS{Name: name, Path: "/run/netns/" + name}
	t.Cleanup(func() {
		if !ns.deleted {
			exec.Command("ip", "netns", "del", name).Run()
		}
	})
	return ns
}

// Do runs fn on a fresh OS thread that has entered the namespace. The
// thread is never returned to the Go scheduler (the goroutine exits while
// still locked, so the runtime discards the thread), which keeps the test
// goroutine's own thread, and every other one, in the root namespace.
// Sockets opened in fn stay in the namespace after fn returns.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromPath(n.Path)
		if err != nil {
			errc <- fmt.Errorf("open %s: %w", n.Path, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Run runs a command inside the namespace (ip netns exec) and returns its
// standard output; standard error only goes into the error.
func (n *NS) Run(name string, args ...string) (string, error) {
	return n.RunInput("", name, args...)
}

// RunInput is Run with stdin.
func (n *NS) RunInput(stdin, name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, stderr.String())
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// MustRunInput is RunInput that fails the test on error.
func (n *NS) MustRunInput(t testing.TB, stdin, name string, args ...string) string {
	t.Helper()
	out, err := n.RunInput(stdin, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// DiffLines lists the lines only in a ("- ") and only in b ("+ "), for
// test failure messages about host snapshots.
func DiffLines(a, b string) string {
	in := func(s, line string) bool { return strings.Contains("\n"+s+"\n", "\n"+line+"\n") }
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if !in(b, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !in(a, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// Spawn starts a server in the namespace, returns once it listens on TCP
// port, and stops it, by its pid, when the test ends.
func (n *NS) Spawn(t testing.TB, port uint16, name string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	for deadline := time.Now().Add(30 * time.Second); ; {
		if out, _ := n.Run("ss", "-Hltn", fmt.Sprintf("sport = :%d", port)); strings.TrimSpace(out) != "" {
			return
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s exited before it listened on port %d: %v", name, port, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on port %d after 30 s", name, port)
		}
	}
}
