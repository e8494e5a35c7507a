package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
}

// StartDockerd runs dockerd in ns with everything under dir and the
// given extra flags. It enters only ns's network namespace (the
// machine's mount namespace has the cgroups runc needs), so whatever
// rules it adds stay in ns. Its containers get a cgroup parent of their
// own. When the test ends its containers are removed, it is stopped by
// its pid, the mounts it left under dir are unmounted and the cgroup
// parent is removed.
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
	d := &Dockerd{Sock: filepath.Join(dir, "docker.sock")}
	d.client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.Sock)
	}}}
	parent := fmt.Sprintf("bpfnet-test-%d-%s", os.Getpid(), filepath.Base(dir))
	var log bytes.Buffer
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns.Path, "/usr/sbin/dockerd",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"), "-H", "unix://" + d.Sock, "--cgroup-parent", "/" + parent}, flags...)...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.Pid = cmd.Process.Pid // nsenter execs dockerd
	t.Cleanup(func() {
		d.removeContainers(t)
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Errorf("dockerd (pid %d) did not stop in 60 s; killed", d.Pid)
			cmd.Process.Kill()
			<-done
		}
		unmountBelow(dir)
		removeCgroup(parent)
		if t.Failed() {
			t.Logf("dockerd log:\n%s", Tail(log.String()))
		}
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var v struct{ Version string }
		if err := d.Call(context.Background(), "GET", "/version", nil, &v); err == nil {
			d.Version = v.Version
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not start:\n%s", Tail(log.String()))
		}
	}
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
