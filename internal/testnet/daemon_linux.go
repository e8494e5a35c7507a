package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/api"
)

// cgroup2Mount is loader.Cgroup2Mount, below which a daemon mounts
// cgroup2 in a directory named by its pid (loader's tests use this
// package, so it cannot import loader).
const cgroup2Mount = "/run/bpfnet/cgroupv2"

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error

	faultOnce sync.Once
	faultDir  string
	faultErr  error

	pauseOnce sync.Once
	pauseErr  error

	cniOnce sync.Once
	cniDir  string
	cniErr  error
)

// Binaries builds bpfnetd and bpfnet once per test process and returns the
// directory holding them. RemoveBinaries deletes it (call it from TestMain).
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "bpfnet-bin-"); buildErr != nil {
			return
		}
		buildErr = goBuild(binDir, "./cmd/bpfnetd", "./cmd/bpfnet", "./internal/testnet/nobpf")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// FaultBinaries builds bpfnetd with the faultinject tag once (it kills
// itself at the crash point named by $BPFNET_FAULT) and returns its
// directory.
func FaultBinaries(t testing.TB) string {
	t.Helper()
	faultOnce.Do(func() {
		if faultDir, faultErr = os.MkdirTemp("", "bpfnet-fault-"); faultErr != nil {
			return
		}
		faultErr = goBuild(faultDir, "-tags", "faultinject", "./cmd/bpfnetd", "./cmd/bpfnet")
	})
	if faultErr != nil {
		t.Fatal(faultErr)
	}
	return faultDir
}

// CNIPlugins builds, once per test process, a CNI_PATH directory with
// bpfnet's plugin (cmd/bpfnet-cni, named bpfnet as make install names it)
// and the reference plugins tuning (for chains) and loopback (containerd's
// CRI runs it for every pod), from containernetworking/plugins, pinned in
// go.mod; it returns the directory.
func CNIPlugins(t testing.TB) string {
	t.Helper()
	cniOnce.Do(func() {
		if cniDir, cniErr = os.MkdirTemp("", "bpfnet-cni-"); cniErr != nil {
			return
		}
		cniErr = errors.Join(goBuildFile(filepath.Join(cniDir, "bpfnet"), "./cmd/bpfnet-cni"),
			goBuildFile(filepath.Join(cniDir, "tuning"), "github.com/containernetworking/plugins/plugins/meta/tuning"),
			goBuildFile(filepath.Join(cniDir, "loopback"), "github.com/containernetworking/plugins/plugins/main/loopback"))
	})
	if cniErr != nil {
		t.Fatal(cniErr)
	}
	return cniDir
}

// PauseBinary builds internal/testnet/pause, static, once per test process
// (into Binaries' directory) and returns its path.
func PauseBinary(t testing.TB) string {
	t.Helper()
	dir := Binaries(t)
	pauseOnce.Do(func() { pauseErr = goBuild(dir, "./internal/testnet/pause") })
	if pauseErr != nil {
		t.Fatal(pauseErr)
	}
	return filepath.Join(dir, "pause")
}

func goBuild(dir string, args ...string) error {
	return goBuildFile(dir+"/", args...)
}

// goBuildFile builds into out (a file, or a directory ending in /).
func goBuildFile(out string, args ...string) error {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return fmt.Errorf("find module root: %w", err)
	}
	cmd := exec.Command("go", append([]string{"build", "-o", out}, args...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, so it also runs as a container's only file
	cmd.Dir = strings.TrimSpace(string(root))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w: %s", err, out)
	}
	return nil
}

// RemoveBinaries deletes the binaries built by Binaries and FaultBinaries.
func RemoveBinaries() {
	for _, d := range []string{binDir, faultDir, cniDir, crictlDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
}

// Daemon is a bpfnetd process running inside a namespace.
type Daemon struct {
	t        testing.TB
	NS       *NS
	Bin      string
	StateDir string
	Socket   string
	// PluginSocket is the Docker network driver's socket: private to the
	// test unless DockerDriver puts it where Docker looks.
	PluginSocket string
	// BPFFS is --bpffs on a bpf filesystem of the test's (PinBPFFS); empty,
	// the daemon mounts its own, as on a host without one.
	BPFFS string
	Args  []string
	// Wrap is a command line that runs the daemon (e.g. setpriv with
	// capabilities dropped); "nobpf" is the helper of that name.
	Wrap []string
	// Env is added to the daemon's environment.
	Env    []string
	Client *api.Client
	cmd    *exec.Cmd
	pids   []int // of every start
	log    *logBuffer
	done   chan error
}

// NewDaemon prepares a daemon in ns that runs as users run it, under `ip
// netns exec` with its defaults (default network, auto datapath, the
// uplink of the default route, its own bpffs and cgroup2 mounts), except
// for a private state dir and socket, so that the machine's
// /var/lib/bpfnet and /run/bpfnet stay untouched and test instances never
// collide; args are extra flags, which a test should explain. It is
// stopped (SIGKILL if need be) when the test ends.
func NewDaemon(t testing.TB, ns *NS, args ...string) *Daemon {
	t.Helper()
	dir := t.TempDir()
	d := &Daemon{t: t, NS: ns, Bin: Binaries(t), StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "bpfnet.sock"),
		PluginSocket: filepath.Join(dir, "docker-plugin.sock"), Args: args}
	var err error
	if d.Client, err = api.NewClient("unix://" + d.Socket); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd != nil {
			d.cmd.Process.Kill()
			<-d.done
		}
		// A daemon killed before it could release the cgroup2 mount point
		// it made on the host's /run (its mount ended with it) leaves the
		// empty directory, named by its pid. Only those go: removing
		// another daemon's would detach its mount in its namespace.
		for _, pid := range d.pids {
			os.Remove(filepath.Join(cgroup2Mount, strconv.Itoa(pid)))
		}
		os.Remove(cgroup2Mount) // the parents, once empty
		os.Remove(filepath.Dir(cgroup2Mount))
		if t.Failed() {
			t.Logf("bpfnetd log:\n%s", d.log)
		}
	})
	return d
}

// DockerDriver puts the daemon's Docker network driver where Docker
// finds plugins, /run/docker/plugins, under a name unique to this test
// (so it never meets a real bpfnet plugin or another test's), and returns
// the driver name for `docker network create -d`. Call it before Start.
func (d *Daemon) DockerDriver() string {
	d.t.Helper()
	nsCount++
	name := fmt.Sprintf("bpfnt-%s-%d", runID, nsCount)
	d.PluginSocket = filepath.Join(dockerPlugins, name+".sock")
	d.t.Cleanup(func() {
		if d.cmd != nil { // this cleanup runs before NewDaemon's
			d.cmd.Process.Kill()
			<-d.done
			d.cmd = nil
		}
		os.Remove(d.PluginSocket) // left by a killed daemon
		removeEngineDirs(dockerPlugins, dockerRun)
	})
	return name
}

// PinBPFFS makes the daemon pin into a bpf filesystem mounted in the
// test's mount namespace, which the daemon's (a copy made by ip netns exec)
// sees, so pins outlive the daemon: for lossless restarts, crashes, and
// tests that read the pins. It returns the --bpffs root.
func (d *Daemon) PinBPFFS() string {
	d.t.Helper()
	d.BPFFS = MountBPFFS(d.t, filepath.Join(d.t.TempDir(), "bpffs"))
	return d.BPFFS
}

// flags are the daemon's flags for this test instance.
func (d *Daemon) flags(extra ...string) []string {
	f := []string{"--state-dir", d.StateDir, "--socket", d.Socket, "--docker-plugin", d.PluginSocket}
	if d.BPFFS != "" {
		f = append(f, "--bpffs", d.BPFFS)
	}
	return append(append(f, d.Args...), extra...)
}

// command is the argument list of `ip` that runs bpfnetd in the namespace.
func (d *Daemon) command(flags ...string) []string {
	args := []string{"netns", "exec", d.NS.Name}
	for _, w := range d.Wrap {
		if w == "nobpf" {
			w = filepath.Join(d.Bin, "nobpf")
		}
		args = append(args, w)
	}
	return append(append(args, filepath.Join(d.Bin, "bpfnetd")), flags...)
}

// Start runs bpfnetd and waits until its API answers.
func (d *Daemon) Start() {
	d.t.Helper()
	if err := d.StartOrExit(); err != nil {
		d.t.Fatalf("%v\n%s", err, d.log)
	}
}

// StartOrExit runs bpfnetd and waits until its API answers; if the daemon
// exits first, it returns that exit (*ExitedError). It fails the test only
// when the daemon neither serves nor exits within a minute.
func (d *Daemon) StartOrExit() error {
	d.t.Helper()
	if d.log == nil {
		d.log = &logBuffer{}
	}
	d.cmd = exec.Command("ip", d.command(d.flags()...)...)
	d.cmd.Env = append(os.Environ(), d.Env...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.pids = append(d.pids, d.cmd.Process.Pid) // ip netns exec execs bpfnetd: the same pid
	d.done = make(chan error, 1)
	go func(c *exec.Cmd) { d.done <- c.Wait() }(d.cmd)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := d.Client.Status(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case err := <-d.done:
			d.cmd = nil
			return &ExitedError{Err: err}
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("bpfnetd not ready: %v\n%s", err, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ExitedError is a daemon that exited while starting.
type ExitedError struct{ Err error }

func (e *ExitedError) Error() string { return fmt.Sprintf("bpfnetd exited while starting: %v", e.Err) }

// Signal sends sig to the running daemon.
func (d *Daemon) Signal(sig os.Signal) {
	d.t.Helper()
	if d.cmd == nil {
		d.t.Fatal("bpfnetd is not running")
	}
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
}

// Stop sends SIGTERM and waits for a clean exit.
func (d *Daemon) Stop() {
	d.t.Helper()
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			d.t.Errorf("bpfnetd exit: %v\n%s", err, d.log)
		}
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		d.t.Errorf("bpfnetd did not stop on SIGTERM\n%s", d.log)
	}
	d.cmd = nil
	// A daemon that stops deletes the spare veth pairs it kept.
	if out, err := d.NS.Run("ip", "-o", "link", "show"); err == nil && strings.Contains(out, "bpfnet/spare/") {
		d.t.Errorf("spare veth pairs left by a stopped bpfnetd:\n%s", out)
	}
}

// WaitExit waits until the daemon exits on its own (it was made to crash)
// and returns its exit error; it fails the test after timeout.
func (d *Daemon) WaitExit(timeout time.Duration) error {
	d.t.Helper()
	if d.cmd == nil {
		return nil
	}
	select {
	case err := <-d.done:
		d.cmd = nil
		return err
	case <-time.After(timeout):
		d.t.Fatalf("bpfnetd still running after %v", timeout)
		return nil
	}
}

// Pid is the running daemon's process id.
func (d *Daemon) Pid() int {
	d.t.Helper()
	if d.cmd == nil {
		d.t.Fatal("bpfnetd is not running")
	}
	return d.cmd.Process.Pid
}

// RunOnce runs bpfnetd with extra flags (e.g. --cleanup) to completion.
func (d *Daemon) RunOnce(extra ...string) (string, error) {
	out, err := exec.Command("ip", d.command(d.flags(extra...)...)...).CombinedOutput()
	return string(out), err
}

// Log returns what the daemon printed so far.
func (d *Daemon) Log() string { return d.log.String() }

// logBuffer is the daemon's output, written by exec's copying goroutine
// while the test reads it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// CLI runs the bpfnet CLI against this daemon and returns stdout, stderr
// and the exit code.
func (d *Daemon) CLI(args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(filepath.Join(d.Bin, "bpfnet"), append([]string{"-H", "unix://" + d.Socket}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		d.t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// MustCLI runs the CLI and fails the test unless it exits 0.
func (d *Daemon) MustCLI(args ...string) string {
	d.t.Helper()
	out, errOut, code := d.CLI(args...)
	if code != 0 {
		d.t.Fatalf("bpfnet %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return strings.TrimSpace(out)
}

// MountBPFFS mounts a private bpf filesystem at dir (unmounted when the
// test ends, which drops every pin in it) and returns the daemon's
// --bpffs root inside it. The daemon runs under `ip netns exec`, whose
// mount namespace is a copy of ours, so its pins land in this instance.
func MountBPFFS(t testing.TB, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount bpffs %s: %v", dir, err)
		}
	})
	return filepath.Join(dir, "bpfnet")
}

// StateFiles returns the daemon's state files (networks/ and endpoints/
// below dir) with their contents, in name order; "" when there are none.
func StateFiles(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	for _, kind := range []string{"networks", "endpoints"} {
		entries, err := os.ReadDir(filepath.Join(dir, kind))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(dir, kind, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s/%s:\n%s", kind, e.Name(), data)
		}
	}
	return b.String()
}

// RSS is the running daemon's resident memory in bytes (VmRSS). `ip
// netns exec` execs the daemon, so the process is the one started.
func (d *Daemon) RSS() int64 {
	d.t.Helper()
	return RSS(d.t, d.Pid())
}

// RSS returns the resident memory of process pid in bytes.
func RSS(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("process status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err == nil {
				return kb << 10
			}
		}
	}
	t.Fatalf("no VmRSS in the status of process %d:\n%s", pid, b)
	return 0
}
