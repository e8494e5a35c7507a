package testnet

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// Podman is Debian's Podman 4.3 with its CNI backend, run by the test in
// a namespace of its with everything under a directory of the test:
// storage, run root, containers.conf (CONTAINERS_CONF), CNI
// configurations, and libcni's cache (a directory of the test mounted
// over /var/lib in each podman command's own mount namespace;
// /run/netns keeps its shared propagation, so bpfnetd sees the
// containers' namespaces).
type Podman struct {
	t      testing.TB
	ns     *NS
	dir    string
	conf   string
	varlib string
}

// PodmanImage is the image Podman.Run starts (the static pause program).
const PodmanImage = "localhost/bpfnet-test/pause:latest"

// StartPodman prepares Podman in ns with CNI plugins from cniBin and
// network configurations from cniConf, and imports PodmanImage. Its
// containers are removed when the test ends.
func StartPodman(t testing.TB, ns *NS, dir, cniBin, cniConf string) *Podman {
	t.Helper()
	if _, err := os.Stat("/usr/bin/podman"); err != nil {
		t.Fatalf("/usr/bin/podman is needed (make deps installs it): %v", err)
	}
	p := &Podman{t: t, ns: ns, dir: dir, conf: filepath.Join(dir, "containers.conf"), varlib: filepath.Join(dir, "varlib")}
	if err := os.MkdirAll(filepath.Join(p.varlib, "cni"), 0o700); err != nil {
		t.Fatal(err)
	}
	// root here lacks CAP_SYS_RESOURCE: the default ulimits would fail.
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=1024:1024", "nproc=16384:16384"]
[network]
network_backend = "cni"
cni_plugin_dirs = [%q]
network_config_dir = %q
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
tmp_dir = %q
`, cniBin, cniConf, filepath.Join(dir, "events.log"), filepath.Join(dir, "tmp"))
	if err := os.WriteFile(p.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := filepath.Glob("/run/netns/netns-*")
	t.Cleanup(func() {
		p.run("rm", "--all", "--force", "--time", "1")
		unmountBelow(dir)
		after, _ := filepath.Glob("/run/netns/netns-*")
		for _, n := range after {
			if !slices.Contains(before, n) {
				exec.Command("ip", "netns", "del", filepath.Base(n)).Run()
			}
		}
	})
	archive := filepath.Join(dir, "pause.tar")
	if err := os.WriteFile(archive, pauseTar(t), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Podman(t, "import", archive, PodmanImage)
	return p
}

func (p *Podman) run(args ...string) (string, error) {
	full := append([]string{"--root", filepath.Join(p.dir, "root"), "--runroot", filepath.Join(p.dir, "run"),
		"--storage-driver", "vfs", "--tmpdir", filepath.Join(p.dir, "tmp")}, args...)
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "unchanged", "--", "sh", "-c",
		`mount --bind "$1" /var/lib && ns="$2" && shift 2 && exec nsenter --net="$ns" /usr/bin/podman "$@"`, "sh", p.varlib, p.ns.Path}, full...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	return runTool(cmd, "podman", args)
}

// Podman runs podman and returns its output.
func (p *Podman) Podman(t testing.TB, args ...string) string {
	t.Helper()
	return must(t)(p.run(args...))
}
