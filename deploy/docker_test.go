package deploy

import (
	"bytes"
	"context"
	"flag"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

var mirror = flag.String("debian-mirror", "http://deb.debian.org/debian", "Debian mirror for the test's base image")

// The top-level Dockerfile builds and the image runs `bpfnetd --check`
// successfully. No registry is reachable, so the test makes its base
// images itself (debootstrap of Debian bookworm with iptables and
// iproute2; the same plus this machine's Go for the build stage), runs
// Debian's Docker 20.10 engine inside the test's host namespace (no route
// out of the machine, so the build is offline: the context carries
// vendored modules) and runs the image there with the documented
// contract.
func TestDockerImage(t *testing.T) {
	testnet.RequirePrivileges(t)
	for _, bin := range []string{"/usr/sbin/dockerd", "/usr/bin/docker", "debootstrap"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is needed (make deps installs it): %v", bin, err)
		}
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	run(t, 15*time.Minute, "debootstrap", "--variant=minbase", "--include=iptables,iproute2,ca-certificates", "bookworm", rootfs, *mirror)

	topo := testnet.NewTopology(t)
	dock := startDockerd(t, topo.Host, filepath.Join(dir, "docker"))

	// Base images: Debian as is, and Debian with /usr/local/go.
	importImage(t, dock, "bpfnet-test/debian:bookworm", rootfs, "")
	importImage(t, dock, "bpfnet-test/golang:bookworm", rootfs, "/usr/local/go")

	// The build context: the repository's files plus vendored modules.
	ctxDir := filepath.Join(dir, "context")
	root := repoRoot(t)
	files := run(t, time.Minute, "git", "-C", root, "ls-files", "--cached", "--others", "--exclude-standard")
	for _, f := range strings.Fields(files) {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue // deleted in the work tree
		}
		os.MkdirAll(filepath.Dir(filepath.Join(ctxDir, f)), 0o755)
		if err := os.WriteFile(filepath.Join(ctxDir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vendor := exec.Command("go", "mod", "vendor")
	vendor.Dir = ctxDir
	if out, err := vendor.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	dock.docker(t, 15*time.Minute, "build", "--network", "none", "-t", "bpfnet-test/bpfnet:test",
		"--build-arg", "GO_IMAGE=bpfnet-test/golang:bookworm", "--build-arg", "BASE_IMAGE=bpfnet-test/debian:bookworm",
		"--build-arg", "VERSION=test", ctxDir)

	labels := dock.docker(t, time.Minute, "inspect", "-f", "{{json .Config.Labels}} {{json .Config.Entrypoint}}", "bpfnet-test/bpfnet:test")
	for _, want := range []string{`"org.opencontainers.image.title":"bpfnet"`, `"org.opencontainers.image.version":"test"`, `["/usr/local/bin/bpfnetd"]`} {
		if !strings.Contains(labels, want) {
			t.Errorf("image lacks %s: %s", want, labels)
		}
	}

	// The run contract of the README. Docker 20.10 does not know CAP_BPF
	// and CAP_PERFMON; CAP_SYS_ADMIN covers both.
	bpffs := filepath.Join(dir, "bpffs")
	os.MkdirAll(bpffs, 0o700)
	run(t, time.Minute, "mount", "-t", "bpf", "bpf", bpffs)
	t.Cleanup(func() { exec.Command("umount", "-l", bpffs).Run() })
	out := dock.docker(t, 2*time.Minute, "run", "--rm", "--network", "host", "--pid", "host",
		"--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW", "--cap-add", "SYS_ADMIN",
		"-v", bpffs+":/sys/fs/bpf", "-v", filepath.Join(dir, "state")+":/var/lib/bpfnet", "-v", filepath.Join(dir, "run")+":/run/bpfnet",
		"bpfnet-test/bpfnet:test", "--check")
	for _, want := range []string{"ok   datapath: auto selects ebpf", "ok   iptables binary", "ok   uplinks: [" + testnet.UplinkIf + "]"} {
		if !strings.Contains(out, want) {
			t.Errorf("--check in the image lacks %q:\n%s", want, out)
		}
	}
}

func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out.String()))
	}
	return out.String()
}

func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

type dockerd struct{ sock string }

func (d dockerd) docker(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	return run(t, timeout, "/usr/bin/docker", append([]string{"-H", "unix://" + d.sock}, args...)...)
}

// startDockerd runs Docker's engine in ns (with the machine's mount
// namespace, for cgroups), with everything under dir, no iptables and no
// bridge of its own, and stops it by its pid when the test ends.
func startDockerd(t *testing.T, ns *testnet.NS, dir string) dockerd {
	os.MkdirAll(dir, 0o700)
	d := dockerd{sock: filepath.Join(dir, "docker.sock")}
	var log bytes.Buffer
	cmd := exec.Command("nsenter", "--net="+ns.Path, "/usr/sbin/dockerd",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"), "-H", "unix://"+d.sock,
		"--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		unmountBelow(dir)
		if t.Failed() {
			t.Logf("dockerd log:\n%s", tail(log.String()))
		}
	})
	cl := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.sock)
	}}}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if resp, err := cl.Get("http://docker/_ping"); err == nil {
			resp.Body.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not start:\n%s", tail(log.String()))
		}
	}
}

// importImage makes an image from rootfs (plus extra, a directory copied
// in at the same path) with docker import.
func importImage(t *testing.T, d dockerd, tag, rootfs, extra string) {
	t.Helper()
	args := []string{"-C", rootfs, "-c", "."}
	if extra != "" {
		args = append(args, "-C", "/", strings.TrimPrefix(extra, "/"))
	}
	tar := exec.Command("tar", args...)
	imp := exec.Command("/usr/bin/docker", "-H", "unix://"+d.sock, "import",
		"--change", "ENV PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "-", tag)
	pipe, err := tar.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	imp.Stdin = pipe
	var out bytes.Buffer
	imp.Stdout, imp.Stderr = &out, &out
	if err := tar.Start(); err != nil {
		t.Fatal(err)
	}
	if err := imp.Run(); err != nil {
		t.Fatalf("docker import %s: %v\n%s", tag, err, out.String())
	}
	if err := tar.Wait(); err != nil {
		t.Fatalf("tar for %s: %v", tag, err)
	}
}

// unmountBelow lazily unmounts every mount point under dir that the
// engine left (overlay layers, its netns bind mount), deepest first.
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
