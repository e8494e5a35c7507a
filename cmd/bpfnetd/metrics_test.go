package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

// nsHTTP is an HTTP client whose connections are made inside ns.
func nsHTTP(ns *testnet.NS) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := ns.Do(func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return
			})
			return c, err
		}}}
}

func scrape(t *testing.T, ns *testnet.NS) string {
	t.Helper()
	resp, err := nsHTTP(ns).Get("http://127.0.0.1:9476/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s\n%s", resp.Status, b)
	}
	return string(b)
}

// sample returns the value of the series with exactly these labels.
func sample(t *testing.T, text, name string, labels map[string]string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for k, v := range labels {
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
			}
		}
		if ok {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	t.Fatalf("no %s%v in the scrape", name, labels)
	return 0
}

// linkStat reads a counter of an interface from sysfs inside ns.
func linkStat(t *testing.T, ns *testnet.NS, ifname, stat string) float64 {
	t.Helper()
	out := ns.MustRun(t, "cat", "/sys/class/net/"+ifname+"/statistics/"+stat)
	v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// After a ping and an iperf3 transfer between two containers, each
// endpoint's counters equal what the kernel counted on the container's
// end of its veth pair: what it sent is from_container (counted before
// any verdict, so the kernel's count includes what was dropped), what it
// received is to_container minus what was dropped on the way in (the
// kernel never saw those): packets exactly, bytes within 1 %. A blocked flow adds
// exactly its reason. promtool finds nothing to complain about in the
// scrape, and a real Prometheus server scraping the daemon returns the
// same byte counter through PromQL.
func TestMetrics(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf", "--default-network=false", "--uplink="+testnet.UplinkIf)
	d.Start()
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
	d.MustCLI("network", "create", "--subnet", "198.18.2.0/24", "other")
	c1, c2, c3 := testnet.NewNS(t, "c1"), testnet.NewNS(t, "c2"), testnet.NewNS(t, "c3")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c2.Path, "--name", "c2")
	d.MustCLI("endpoint", "create", "--network", "other", "--netns", c3.Path, "--name", "c3")
	c2addr, c3addr := mustAddr(t, d, "c2"), mustAddr(t, d, "c3")

	c1.MustRun(t, "ping", "-n", "-q", "-c", "100", "-i", "0.01", c2addr.String())
	c2.Spawn(t, "iperf3", "-s", "-B", c2addr.String())
	c1.MustRun(t, "iperf3", "-c", c2addr.String(), "-t", "2")
	time.Sleep(500 * time.Millisecond) // let the last ACKs and FINs land

	// The kernel's counters are read before and after the scrape: a
	// stray packet (ARP, IPv6 neighbour discovery) may land in between.
	type bracket struct{ lo, hi float64 }
	kernel := map[string]bracket{}
	read := func(first bool) {
		for _, c := range []struct {
			name string
			ns   *testnet.NS
		}{{"c1", c1}, {"c2", c2}} {
			for _, st := range []string{"tx_packets", "tx_bytes", "rx_packets", "rx_bytes"} {
				v, k := linkStat(t, c.ns, "eth0", st), c.name+" "+st
				b := kernel[k]
				if first {
					b.lo = v
				}
				b.hi = v
				kernel[k] = b
			}
		}
	}
	read(true)
	text := scrape(t, topo.Host)
	read(false)
	for _, c := range []struct {
		name string
		ns   *testnet.NS
	}{{"c1", c1}, {"c2", c2}} {
		for _, k := range []struct{ dir, pkts, bytes string }{
			{"from_container", "tx_packets", "tx_bytes"}, {"to_container", "rx_packets", "rx_bytes"},
		} {
			l := map[string]string{"endpoint": c.name, "network": "web", "direction": k.dir}
			gotP, wantP := sample(t, text, "bpfnet_endpoint_packets_total", l), kernel[c.name+" "+k.pkts]
			gotB, wantB := sample(t, text, "bpfnet_endpoint_bytes_total", l), kernel[c.name+" "+k.bytes]
			if k.dir == "to_container" {
				dropped := droppedIn(text, c.name)
				gotP -= dropped.packets
				gotB -= dropped.bytes
			}
			if gotP < wantP.lo || gotP > wantP.hi {
				t.Errorf("%s %s: %v packets, the kernel counted %v (%v after the scrape)", c.name, k.dir, gotP, wantP.lo, wantP.hi)
			}
			if gotB < wantB.lo*0.99 || gotB > wantB.hi*1.01 {
				t.Errorf("%s %s: %v bytes, the kernel counted %v (%v after the scrape)", c.name, k.dir, gotB, wantB.lo, wantB.hi)
			}
		}
	}

	// A blocked flow: 3 pings c1 → c3 (another network) are 3 isolation
	// drops on c1, and nothing else moves.
	before := scrape(t, topo.Host)
	c1.Run("ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", c3addr.String())
	after := scrape(t, topo.Host)
	drops := regexp.MustCompile(`(?m)^bpfnet_endpoint_drops_total\{[^}]*\} .*$`)
	changed := map[string]float64{}
	for _, line := range drops.FindAllString(after, -1) {
		key, val, _ := strings.Cut(line, "} ")
		v, _ := strconv.ParseFloat(val, 64)
		prev := 0.0
		for _, b := range drops.FindAllString(before, -1) {
			if bk, bv, _ := strings.Cut(b, "} "); bk == key {
				prev, _ = strconv.ParseFloat(bv, 64)
			}
		}
		if v != prev {
			changed[key+"}"] = v - prev
		}
	}
	want := `bpfnet_endpoint_drops_total{direction="from_container",endpoint="c1",interface="` + mustEndpoint(t, d, "c1").HostIf + `",network="web",reason="isolation"}`
	if len(changed) != 1 || changed[want] != 3 {
		t.Errorf("drops that moved: %v; want only %s +3", changed, want)
	}

	// promtool has no complaint about the exposition.
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(after)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// A real Prometheus server in the host namespace, on loopback.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: bpfnet\n    static_configs:\n      - targets: ['127.0.0.1:9476']\n"), 0o644)
	topo.Host.Spawn(t, "prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:9090")
	wantBytes := sample(t, after, "bpfnet_endpoint_bytes_total", map[string]string{"endpoint": "c1", "direction": "from_container"})
	q := `bpfnet_endpoint_bytes_total{endpoint="c1",direction="from_container"}`
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := promQuery(topo.Host, q)
		if err == nil && got == wantBytes {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PromQL %s = %v (%v), want %v", q, got, err, wantBytes)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

type dropped struct{ packets, bytes float64 }

// droppedIn sums an endpoint's to_container drops. Only IPv6 (neighbour
// discovery aside) is dropped between two containers of one network; its
// bytes are not counted per reason, so frames are taken as 90 bytes (an
// MLD report), which is within the 1 % tolerance.
func droppedIn(text, ep string) dropped {
	var d dropped
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "bpfnet_endpoint_drops_total{") && strings.Contains(line, `endpoint="`+ep+`"`) &&
			strings.Contains(line, `direction="to_container"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			d.packets += v
			d.bytes += 90 * v
		}
	}
	return d
}

// promQuery runs an instant query against the Prometheus in ns and
// returns the single result's value.
func promQuery(ns *testnet.NS, q string) (float64, error) {
	resp, err := nsHTTP(ns).Get("http://127.0.0.1:9090/api/v1/query?query=" + urlQuery(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if len(r.Data.Result) != 1 {
		return 0, fmt.Errorf("%d results", len(r.Data.Result))
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}

func urlQuery(s string) string {
	r := strings.NewReplacer("{", "%7B", "}", "%7D", `"`, "%22", "=", "%3D", ",", "%2C", " ", "%20")
	return r.Replace(s)
}

// bpfnet monitor shows a forbidden ping within a second, with its reason.
func TestMonitor(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf", "--default-network=false", "--uplink="+testnet.UplinkIf)
	d.Start()
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
	d.MustCLI("network", "create", "--subnet", "198.18.2.0/24", "other")
	c1, c3 := testnet.NewNS(t, "c1"), testnet.NewNS(t, "c3")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	d.MustCLI("endpoint", "create", "--network", "other", "--netns", c3.Path, "--name", "c3")
	c3addr := mustAddr(t, d, "c3")

	mon := exec.Command(filepath.Join(d.Bin, "bpfnet"), "-H", "unix://"+d.Socket, "monitor", "--endpoint", "c1", "--format", "json")
	stdout, _ := mon.StdoutPipe()
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { mon.Process.Kill(); mon.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	time.Sleep(300 * time.Millisecond) // the subscription is in place
	sent := time.Now()
	go c1.Run("ping", "-n", "-c", "1", "-W", "1", c3addr.String())
	// Other drops (the container's IPv6 router solicitations) may come
	// first; the ping's must arrive within a second.
	deadline := time.After(time.Until(sent.Add(time.Second)))
	for found := false; !found; {
		select {
		case line := <-lines:
			var ev struct {
				Time                                       time.Time
				Endpoint, Network, Reason, Proto, Src, Dst string
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("monitor printed %q: %v", line, err)
			}
			if ev.Proto != "icmp" {
				continue
			}
			found = true
			if ev.Endpoint != "c1" || ev.Network != "web" || ev.Reason != "isolation" || !strings.HasPrefix(ev.Dst, c3addr.String()+":") {
				t.Errorf("event %+v; want c1/web isolation icmp to %s", ev, c3addr)
			}
		case <-deadline:
			t.Fatal("no event within a second of the forbidden ping")
		}
	}
	if _, stderr, code := d.CLI("monitor", "--format", "xml"); code == 0 || !strings.Contains(stderr, "invalid --format") {
		t.Errorf("monitor --format xml: exit %d, %s", code, stderr)
	}
}
