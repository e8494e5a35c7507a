package testnet

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Containerd is Debian's containerd 1.6 (a dependency of docker.io, which
// `make deps` installs) with its CRI plugin, running in a test's
// namespace as the kubelet's runtime would, driven with crictl.
type Containerd struct {
	Sock   string
	t      testing.TB
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	log    bytes.Buffer
	crictl string
}

// PauseRef is the sandbox image StartContainerd imports: the static pause
// program alone.
const PauseRef = "docker.io/bpfnet/pause:test"

// StartContainerd runs containerd with everything under dir, its CRI
// plugin taking CNI plugins from cniBin and configurations from cniConf,
// in ns's network namespace. It runs in a mount namespace of its own
// where a directory of the test is mounted over /var/lib, so libcni's
// cache (/var/lib/cni) stays the test's; /run/netns keeps its shared
// propagation, so the pods' namespaces are seen by bpfnetd. When the test
// ends its pods are removed and it is stopped by its pid.
func StartContainerd(t testing.TB, ns *NS, dir, cniBin, cniConf string) *Containerd {
	t.Helper()
	for _, bin := range []string{"/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is needed (make deps installs docker.io, which brings containerd and runc): %v", bin, err)
		}
	}
	varlib := filepath.Join(dir, "varlib")
	if err := os.MkdirAll(filepath.Join(varlib, "cni"), 0o700); err != nil {
		t.Fatal(err)
	}
	c := &Containerd{t: t, dir: dir, Sock: filepath.Join(dir, "containerd.sock"), crictl: crictl(t)}
	parent := c.CgroupParent()
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  # root here lacks CAP_SYS_RESOURCE: runc fails to lower oom_score_adj otherwise
  restrict_oom_score_adj = true
  sandbox_image = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Sock, PauseRef, cniBin, cniConf)
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// The pods' namespaces (/run/netns/cni-*) that exist before it: any
	// other one it leaves (a sandbox that failed as containerd stopped)
	// is removed at the end.
	before, _ := filepath.Glob("/run/netns/cni-*")
	c.cmd = exec.Command("unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c",
		`mount --bind "$1" /var/lib && exec nsenter --net="$2" /usr/bin/containerd --config "$3"`, "sh", varlib, ns.Path, cfg)
	c.cmd.Stdout, c.cmd.Stderr = &c.log, &c.log
	c.cmd.Env = append(os.Environ(), "TMPDIR="+dir) // its goroutine dumps, under dir
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.exited = make(chan struct{})
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		c.crictlRun("rmp", "--all", "--force")
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("containerd (pid %d) did not stop in 30 s; killed", c.cmd.Process.Pid)
			c.cmd.Process.Kill()
			<-c.exited
		}
		unmountBelow(dir)
		removeCgroup(strings.TrimPrefix(parent, "/"))
		removeEngineDirs(containerdRun)
		after, _ := filepath.Glob("/run/netns/cni-*")
		for _, p := range after {
			if !slices.Contains(before, p) {
				exec.Command("ip", "netns", "del", filepath.Base(p)).Run()
			}
		}
		if t.Failed() {
			t.Logf("containerd log:\n%s", Tail(c.log.String()))
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := c.crictlRun("info"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not start:\n%s", Tail(c.log.String()))
		}
	}
	c.importPause(t)
	return c
}

// CgroupParent is where the test's pods go (a parent of their own,
// removed when the test ends).
func (c *Containerd) CgroupParent() string {
	return fmt.Sprintf("/bpfnet-test-%d-%s", os.Getpid(), filepath.Base(c.dir))
}

func (c *Containerd) crictlRun(args ...string) (string, error) {
	return runTool(exec.Command(c.crictl, append([]string{"--runtime-endpoint", "unix://" + c.Sock, "--timeout", "60s"}, args...)...), "crictl", args)
}

// Crictl runs crictl against this containerd and returns its output.
func (c *Containerd) Crictl(t testing.TB, args ...string) string {
	t.Helper()
	return must(t)(c.crictlRun(args...))
}

// importPause makes PauseRef from the pause binary: an OCI image layout
// in a tar, imported with ctr into the k8s.io namespace CRI uses.
func (c *Containerd) importPause(t testing.TB) {
	t.Helper()
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d, len(b)
	}
	layerDigest, layerSize := put(pauseTar(t))
	config, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/pause"}}, "rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}}})
	configDigest, configSize := put(config)
	manifest, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}}})
	manifestDigest, manifestSize := put(manifest)
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{
		"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
		"annotations": map[string]string{"io.containerd.image.name": PauseRef, "org.opencontainers.image.ref.name": "test"}}}})
	var archive bytes.Buffer
	aw := tar.NewWriter(&archive)
	file := func(name string, b []byte) {
		aw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		aw.Write(b)
	}
	file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	file("index.json", index)
	for d, b := range blobs {
		file("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	aw.Close()
	imp := exec.Command("/usr/bin/ctr", "--address", c.Sock, "-n", "k8s.io", "images", "import", "-")
	imp.Stdin = &archive
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
}

var (
	crictlOnce sync.Once
	crictlDir  string
	crictlErr  error
)

// crictl builds cri-tools' crictl (the kubelet's view of CRI, from the
// module proxy) once per test process.
func crictl(t testing.TB) string {
	t.Helper()
	crictlOnce.Do(func() {
		if crictlDir, crictlErr = os.MkdirTemp("", "bpfnet-crictl-"); crictlErr != nil {
			return
		}
		cmd := exec.Command("go", "install", "sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0")
		cmd.Dir = crictlDir
		cmd.Env = append(os.Environ(), "GOBIN="+crictlDir, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			crictlErr = fmt.Errorf("go install crictl: %v: %s", err, out)
		}
	})
	if crictlErr != nil {
		t.Fatal(crictlErr)
	}
	return filepath.Join(crictlDir, "crictl")
}

// runTool runs a test tool's command (its name, for errors) with a time
// limit and returns its standard output; the error has its standard error.
func runTool(cmd *exec.Cmd, name string, args []string) (string, error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, Tail(errb.String()))
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("%s %s: timed out", name, strings.Join(args, " "))
	}
	return out.String(), nil
}

// must turns (output, error) into the output, failing the test on error.
func must(t testing.TB) func(string, error) string {
	return func(out string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

// pauseTar is a tar of the static pause program alone: a container
// image's whole file system.
func pauseTar(t testing.TB) []byte {
	t.Helper()
	bin, err := os.ReadFile(PauseBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(bin)
	tw.Close()
	return tb.Bytes()
}
