package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

// systemd's side of the notify protocol: a datagram socket named by
// $NOTIFY_SOCKET, newline-separated VAR=value lines per message.
type notifySocket struct {
	conn *net.UnixConn
	msgs chan string
}

func newNotifySocket(t *testing.T) (*notifySocket, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &notifySocket{conn: c, msgs: make(chan string, 256)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(s.msgs)
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	return s, path
}

// await returns the first message containing want, skipping the others.
func (s *notifySocket) await(t *testing.T, want string, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-s.msgs:
			if strings.Contains(m, want) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q from the daemon within %v", want, within)
		}
	}
}

// count counts the messages equal to msg during d.
func (s *notifySocket) count(msg string, d time.Duration) int {
	n := 0
	deadline := time.After(d)
	for {
		select {
		case m := <-s.msgs:
			if m == msg {
				n++
			}
		case <-deadline:
			return n
		}
	}
}

// logged returns the daemon's log once it holds want (at most 5 s): its
// lines reach the test through a pipe, after a notify message that the
// daemon sent later may already have arrived.
func logged(d *testnet.Daemon, want string) string {
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(d.Log(), want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return d.Log()
}

// The daemon speaks systemd's notify protocol (READY with a STATUS,
// WATCHDOG pings at half WATCHDOG_USEC, RELOADING and READY around a
// reload, STOPPING), and SIGHUP re-reads the config file: the metrics
// listener, its per-endpoint series and the socket's group change at
// once; a setting that cannot change while running (the datapath) is
// named in the log; an invalid file changes nothing. The daemon runs
// with --config (the flag under test: the default file is the machine's).
func TestSystemdAndReload(t *testing.T) {
	topo := testnet.NewTopology(t)
	ns, notifyPath := newNotifySocket(t)
	cfgFile := filepath.Join(t.TempDir(), "bpfnetd.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfgFile, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("metrics-per-endpoint: true\n")
	d := testnet.NewDaemon(t, topo.Host, "--config", cfgFile)
	d.Env = []string{"NOTIFY_SOCKET=" + notifyPath, "WATCHDOG_USEC=1000000"}
	d.Start()
	if m := ns.await(t, "READY=1", 10*time.Second); !strings.Contains(m, "STATUS=serving ") {
		t.Errorf("ready message %q has no STATUS", m)
	}
	// 1 s watchdog: a ping every 0.5 s.
	if pings := ns.count("WATCHDOG=1", 2*time.Second); pings < 3 || pings > 5 {
		t.Errorf("%d watchdog pings in 2 s, want 4 (one every 0.5 s)", pings)
	}

	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
	c1 := testnet.NewNS(t, "c1")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	if !strings.Contains(scrape(t, topo.Host), "bpfnet_endpoint_packets_total{") {
		t.Fatal("no per-endpoint series before the reload")
	}

	write("metrics-per-endpoint: false\nmetrics-addr: 127.0.0.1:9478\ngroup: nogroup\ndatapath: iptables\n")
	d.Signal(syscall.SIGHUP)
	ns.await(t, "RELOADING=1", 10*time.Second)
	if m := ns.await(t, "READY=1", 10*time.Second); !strings.Contains(m, "STATUS=reloaded: applied [group metrics-addr metrics-per-endpoint], need a restart [datapath]") {
		t.Errorf("after the reload systemd was told %q", m)
	}
	resp, err := nsHTTP(topo.Host).Get("http://127.0.0.1:9478/metrics")
	if err != nil {
		t.Fatalf("the new metrics address: %v", err)
	}
	var b strings.Builder
	buf := make([]byte, 1<<16)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	if text := b.String(); strings.Contains(text, "bpfnet_endpoint_") || !strings.Contains(text, "bpfnet_network_packets_total{") {
		t.Errorf("per-endpoint series still there, or the totals are gone:\n%s", text)
	}
	if _, err := nsHTTP(topo.Host).Get("http://127.0.0.1:9476/metrics"); err == nil {
		t.Error("the old metrics address still answers")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(d.Socket, &st); err != nil || st.Gid != 65534 {
		t.Errorf("socket group %d (%v), want nogroup's 65534", st.Gid, err)
	}
	if log := logged(d, "only take effect when the daemon restarts"); !strings.Contains(log, "only take effect when the daemon restarts") || !strings.Contains(log, "datapath") {
		t.Errorf("the log does not say the datapath needs a restart:\n%s", log)
	}
	if got := d.MustCLI("status", "--format", "{{.Datapath}}"); got != "ebpf" {
		t.Errorf("datapath %s after the reload; it changes only at a restart", got)
	}

	// An invalid file: nothing changes, the log says why.
	write("metrics-per-endpoint: true\nno-such-setting: 1\n")
	d.Signal(syscall.SIGHUP)
	if m := ns.await(t, "READY=1", 10*time.Second); !strings.Contains(m, "reload failed") {
		t.Errorf("after an invalid reload systemd was told %q", m)
	}
	if !strings.Contains(logged(d, `unknown key \"no-such-setting\"`), `unknown key \"no-such-setting\"`) {
		t.Errorf("the log does not name the bad key:\n%s", d.Log())
	}
	if _, err := nsHTTP(topo.Host).Get("http://127.0.0.1:9478/metrics"); err != nil {
		t.Errorf("metrics gone after an invalid reload: %v", err)
	}

	d.Stop()
	ns.await(t, "STOPPING=1", 5*time.Second)
}
