package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/api"
)

// Dockerd is Docker's engine (Debian's docker.io 20.10, which `make deps`
// installs) running in a test's namespace, with a client of its API.
type Dockerd struct {
	Sock    string // its API socket
	Pid     int
	Version string
	client  *http.Client

	t      testing.TB
	args   []string // nsenter's
	dir    string
	log    bytes.Buffer
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartDockerd runs dockerd in ns with everything under dir and the
// given extra flags. It enters only ns's network namespace (the
// machine's mount namespace has the cgroups runc needs), so whatever
// rules it adds stay in ns. Its containers get a cgroup parent of their
// own. When the test ends its containers are removed, it is stopped by
// its pid (and so is the containerd it started, which --live-restore
// leaves running across restarts), the mounts it left under dir are
// unmounted and the cgroup parent is removed.
func StartDockerd(t testing.TB, ns *NS, dir string, flags ...string) *Dockerd {
	t.Helper()
	for _, bin := range []string{"/usr/sbin/dockerd", "/usr/bin/docker"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is needed (make deps installs docker.io): %v", bin, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	d := &Dockerd{t: t, dir: dir, Sock: filepath.Join(dir, "docker.sock")}
	d.client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.Sock)
	}}}
	parent := fmt.Sprintf("bpfnet-test-%d-%s", os.Getpid(), filepath.Base(dir))
	d.args = append([]string{"--net=" + ns.Path, "/usr/sbin/dockerd",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"), "-H", "unix://" + d.Sock, "--cgroup-parent", "/" + parent}, flags...)
	t.Cleanup(func() {
		if d.cmd != nil {
			d.removeContainers(t)
			d.Stop()
		}
		// The containerd dockerd started, if it outlived it.
		if b, err := os.ReadFile(filepath.Join(dir, "exec", "containerd", "containerd.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				if p, err := os.FindProcess(pid); err == nil && p.Signal(syscall.Signal(0)) == nil {
					p.Signal(syscall.SIGTERM)
					for i := 0; i < 100 && p.Signal(syscall.Signal(0)) == nil; i++ {
						time.Sleep(100 * time.Millisecond)
					}
				}
			}
		}
		unmountBelow(dir)
		removeCgroup(parent)
		removeEngineDirs(containerdRun, dockerPlugins, dockerRun)
		if t.Failed() {
			t.Logf("dockerd log:\n%s", Tail(d.log.String()))
		}
	})
	d.Start()
	return d
}

// Start starts dockerd (again) and waits until its API answers.
func (d *Dockerd) Start() {
	d.t.Helper()
	d.cmd = exec.Command("nsenter", d.args...)
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	// Its temporary files, and the goroutine dumps of the containerd it
	// starts (when it stops it), under dir rather than the machine's /tmp.
	d.cmd.Env = append(os.Environ(), "TMPDIR="+d.dir)
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.Pid = d.cmd.Process.Pid // nsenter execs dockerd
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(d.cmd, d.exited)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var v struct{ Version string }
		if err := d.Call(context.Background(), "GET", "/version", nil, &v); err == nil {
			d.Version = v.Version
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("dockerd did not start:\n%s", Tail(d.log.String()))
		}
	}
}

// Stop stops dockerd by its pid (SIGTERM, SIGKILL after 60 s).
func (d *Dockerd) Stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		d.t.Errorf("dockerd (pid %d) did not stop in 60 s; killed", d.Pid)
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
}

// Docker runs the docker CLI against this engine and returns its output.
func (d *Dockerd) Docker(t testing.TB, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/docker", append([]string{"-H", "unix://" + d.Sock}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, Tail(string(out)))
	}
	return string(out)
}

// Call makes one request of the engine's API (version 1.41, Engine
// 20.10): body, if any, is sent as JSON and the answer decoded into out,
// if not nil.
func (d *Dockerd) Call(ctx context.Context, method, path string, body, out any) error {
	req, err := api.NewJSONRequest(ctx, method, "http://docker/v1.41"+path, body)
	if err != nil {
		return err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	if out != nil {
		return json.Unmarshal(msg, out)
	}
	return nil
}

func (d *Dockerd) removeContainers(t testing.TB) {
	ctx := context.Background()
	var list []struct {
		ID string `json:"Id"`
	}
	if err := d.Call(ctx, "GET", "/containers/json?all=1", nil, &list); err != nil {
		return
	}
	for _, c := range list {
		if err := d.Call(ctx, "DELETE", "/containers/"+c.ID+"?force=1", nil, nil); err != nil {
			t.Errorf("remove container %s: %v", c.ID, err)
		}
	}
}

// unmountBelow lazily unmounts every mount point under dir that the
// engine left (overlay layers, its netns bind mounts), deepest first.
func unmountBelow(dir string) {
	b, _ := os.ReadFile("/proc/self/mounts")
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			points = append(points, f[1])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		exec.Command("umount", "-l", points[i]).Run()
	}
}

// The directories engines of the tests make in the machine's /run,
// whatever their configuration says: containerd's (also the one dockerd
// starts) for its shims' sockets and runc's state, and Docker's plugin
// directory (dockerd makes it to look for plugins, DockerDriver puts a
// driver there).
const (
	containerdRun = "/run/containerd"
	dockerRun     = "/run/docker"
	dockerPlugins = "/run/docker/plugins"
)

// runDirsAtStart are those of them the machine had when this test process
// started; the others are the tests' to remove.
var runDirsAtStart = func() map[string]bool {
	had := map[string]bool{}
	for _, d := range []string{containerdRun, dockerRun, dockerPlugins} {
		_, err := os.Stat(d)
		had[d] = err == nil
	}
	return had
}()

// removeEngineDirs removes each of dirs (deepest first) and the empty
// directories below it, unless the machine had it when the tests started.
// Whichever test's cleanup finds it empty removes it: one that holds
// anything (another test's engine still runs) stays, and so do its
// parents.
func removeEngineDirs(dirs ...string) {
	for _, dir := range dirs {
		if runDirsAtStart[dir] {
			continue
		}
		var below []string
		filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				below = append(below, p)
			}
			return nil
		})
		for i := len(below) - 1; i >= 0; i-- {
			os.Remove(below[i])
		}
	}
}

// removeCgroup removes the (empty) cgroup name in every mounted
// hierarchy.
func removeCgroup(name string) {
	b, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
			os.Remove(filepath.Join(f[1], name))
		}
	}
}

// Tail is the last 3000 bytes of s (a command's output in a failure).
func Tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

// PauseImage is the image Run starts: the static pause binary alone.
const PauseImage = "bpfnet-test:pause"

// ImportPause makes PauseImage in this engine with docker import.
func (d *Dockerd) ImportPause(t testing.TB) {
	t.Helper()
	imp := exec.Command("/usr/bin/docker", "-H", "unix://"+d.Sock, "import", "-", PauseImage)
	imp.Stdin = bytes.NewReader(pauseTar(t))
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v\n%s", err, out)
	}
}

// Run starts a container of PauseImage named name (`docker run -d --name
// name ARGS... IMAGE /pause`; ARGS are docker run's, e.g. --network) and
// returns its network namespace as an NS (attached with `ip netns
// attach`, detached when the test ends), so probes and servers run in it.
func (d *Dockerd) Run(t testing.TB, name string, args ...string) *NS {
	t.Helper()
	d.Docker(t, 60*time.Second, append(append([]string{"run", "-d", "--name", name}, args...), PauseImage, "/pause")...)
	return d.AttachNS(t, name)
}

// AttachNS returns the network namespace of a running container as an NS.
func (d *Dockerd) AttachNS(t testing.TB, container string) *NS {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(d.Docker(t, 30*time.Second, "inspect", "-f", "{{.State.Pid}}", container)))
	if err != nil {
		t.Fatal(err)
	}
	return AttachNS(t, container, pid)
}

// ContainerAddr is a container's address on a network (docker inspect).
func (d *Dockerd) ContainerAddr(t testing.TB, container, network string) netip.Addr {
	t.Helper()
	return d.containerAddr(t, container, network, "IPAddress")
}

// ContainerAddr6 is a container's IPv6 address on a network.
func (d *Dockerd) ContainerAddr6(t testing.TB, container, network string) netip.Addr {
	t.Helper()
	return d.containerAddr(t, container, network, "GlobalIPv6Address")
}

func (d *Dockerd) containerAddr(t testing.TB, container, network, field string) netip.Addr {
	t.Helper()
	out := strings.TrimSpace(d.Docker(t, 30*time.Second, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+network+`").`+field+`}}`, container))
	a, err := netip.ParseAddr(out)
	if err != nil {
		t.Fatalf("address of %s on %s: %q", container, network, out)
	}
	return a
}
