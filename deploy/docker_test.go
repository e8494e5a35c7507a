package deploy

import (
	"bytes"
	"context"
	"flag"
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
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Fatalf("debootstrap is needed (make deps installs it): %v", err)
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	run(t, 15*time.Minute, "debootstrap", "--variant=minbase", "--include=iptables,iproute2,ca-certificates", "bookworm", rootfs, *mirror)

	topo := testnet.NewTopology(t)
	dock := testnet.StartDockerd(t, topo.Host, filepath.Join(dir, "docker"), "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none")

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
	dock.Docker(t, 15*time.Minute, "build", "--network", "none", "-t", "bpfnet-test/bpfnet:test",
		"--build-arg", "GO_IMAGE=bpfnet-test/golang:bookworm", "--build-arg", "BASE_IMAGE=bpfnet-test/debian:bookworm",
		"--build-arg", "VERSION=test", ctxDir)

	labels := dock.Docker(t, time.Minute, "inspect", "-f", "{{json .Config.Labels}} {{json .Config.Entrypoint}}", "bpfnet-test/bpfnet:test")
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
	out := dock.Docker(t, 2*time.Minute, "run", "--rm", "--network", "host", "--pid", "host",
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
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, testnet.Tail(out.String()))
	}
	return out.String()
}

// importImage makes an image from rootfs (plus extra, a directory copied
// in at the same path) with docker import.
func importImage(t *testing.T, d *testnet.Dockerd, tag, rootfs, extra string) {
	t.Helper()
	args := []string{"-C", rootfs, "-c", "."}
	if extra != "" {
		args = append(args, "-C", "/", strings.TrimPrefix(extra, "/"))
	}
	tar := exec.Command("tar", args...)
	imp := exec.Command("/usr/bin/docker", "-H", "unix://"+d.Sock, "import",
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
