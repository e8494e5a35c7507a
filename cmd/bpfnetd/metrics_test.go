package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/testnet"
)

func endpointReq(netName, netns, ifname, name string) api.CreateEndpointRequest {
	return api.CreateEndpointRequest{Network: netName, NetNS: netns, IfName: ifname, Name: name}
}

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

// quiet returns once read gives the same value twice 100 ms apart (at
// most 10 s).
func quiet(t *testing.T, read func() float64) { quietFor(t, 100*time.Millisecond, read) }

// quietFor returns once read has not changed for d (at most 10 s).
func quietFor(t *testing.T, d time.Duration, read func() float64) {
	t.Helper()
	last, since := read(), time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if v := read(); v != last {
			last, since = v, time.Now()
		} else if time.Since(since) >= d {
			return
		}
	}
	t.Fatal("counters still moving after 10 s")
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
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf")
	d.Start()
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
	d.MustCLI("network", "create", "--subnet", "198.18.2.0/24", "other")
	c1, c2, c3 := testnet.NewNS(t, "c1"), testnet.NewNS(t, "c2"), testnet.NewNS(t, "c3")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c2.Path, "--name", "c2")
	d.MustCLI("endpoint", "create", "--network", "other", "--netns", c3.Path, "--name", "c3")
	c2addr, c3addr := mustAddr(t, d, "c2"), mustAddr(t, d, "c3")

	c1.MustRun(t, "ping", "-n", "-q", "-c", "100", "-i", "0.01", c2addr.String())
	c2.Spawn(t, 5201, "iperf3", "-s", "-B", c2addr.String())
	c1.MustRun(t, "iperf3", "-c", c2addr.String(), "-t", "2")
	// Let the last ACKs and FINs land: until c1's counters stand still.
	quiet(t, func() float64 { return linkStat(t, c1, "eth0", "rx_packets") + linkStat(t, c1, "eth0", "tx_packets") })

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
	// Their bytes: a default ping is 98 bytes on the wire (14 Ethernet,
	// 20 IPv4, 8 ICMP, 56 data).
	l := map[string]string{"endpoint": "c1", "direction": "from_container", "reason": "isolation"}
	if got := sample(t, after, "bpfnet_endpoint_drop_bytes_total", l) - sampleOr(before, "bpfnet_endpoint_drop_bytes_total", l); got != 3*98 {
		t.Errorf("c1's isolation drop bytes +%v, want +%v (3 pings of 98 bytes)", got, 3*98)
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
	topo.Host.Spawn(t, 9090, "prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:9090")
	// Prometheus scrapes every second and background frames (ARP,
	// neighbour discovery) still trickle in, so the query must return a
	// value between our scrapes just before and just after it.
	l = map[string]string{"endpoint": "c1", "direction": "from_container"}
	q := `bpfnet_endpoint_bytes_total{endpoint="c1",direction="from_container"}`
	lo := sample(t, after, "bpfnet_endpoint_bytes_total", l) // before Prometheus started
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := promQuery(topo.Host, q)
		hi := sample(t, scrape(t, topo.Host), "bpfnet_endpoint_bytes_total", l)
		if err == nil && got >= lo && got <= hi {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PromQL %s = %v (%v), want between %v and %v", q, got, err, lo, hi)
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

// The eBPF datapath counts each IP family apart: the network series carry
// a family label, endpoint inspect has the split, and a ping over one
// family moves only that family's counters (give or take the neighbour
// discovery and router solicitations a container sends on its own, which
// are IPv6 and ARP).
func TestMetricsFamilies(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf") // the split is the eBPF datapath's
	d.Start()
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "--ipv6", "--subnet", "fd00:18:1::/64", "web")
	d.MustCLI("network", "create", "--subnet", "198.18.2.0/24", "--ipv6", "--subnet", "fd00:18:2::/64", "other")
	c1, c2, c3 := testnet.NewNS(t, "c1"), testnet.NewNS(t, "c2"), testnet.NewNS(t, "c3")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c2.Path, "--name", "c2")
	d.MustCLI("endpoint", "create", "--network", "other", "--netns", c3.Path, "--name", "c3")
	ep2, ep3 := mustEndpoint(t, d, "c2"), mustEndpoint(t, d, "c3")
	// Settle the neighbours first, so the pings below are most of what moves.
	c1.MustRun(t, "ping", "-n", "-q", "-c", "1", ep2.IP.String())
	c1.MustRun(t, "ping", "-n", "-q", "-c", "1", ep2.IP6.String())

	from := func(text, family string) (packets, bytes float64) {
		l := map[string]string{"network": "web", "direction": "from_container", "family": family}
		return sample(t, text, "bpfnet_network_packets_total", l), sample(t, text, "bpfnet_network_bytes_total", l)
	}
	// A default ping is 98 bytes on the wire over IPv4 (14 Ethernet, 20
	// IPv4, 8 ICMP, 56 data), 118 over IPv6 (a 40-byte header).
	for _, c := range []struct {
		family, other string
		dst           netip.Addr
		frame         float64
	}{{"ipv6", "ipv4", ep2.IP6, 118}, {"ipv4", "ipv6", ep2.IP, 98}} {
		before := scrape(t, topo.Host)
		c1.MustRun(t, "ping", "-n", "-q", "-c", "20", "-i", "0.01", c.dst.String())
		after := scrape(t, topo.Host)
		p0, b0 := from(before, c.family)
		p1, b1 := from(after, c.family)
		if p1-p0 < 40 || p1-p0 > 46 || b1-b0 < 40*c.frame {
			// c1's 20 requests and c2's 20 replies, and a few neighbour
			// messages.
			t.Errorf("%s: +%v packets, +%v bytes; want 40 to 46 packets, at least %v bytes", c.family, p1-p0, b1-b0, 40*c.frame)
		}
		o0, _ := from(before, c.other)
		o1, _ := from(after, c.other)
		if o1-o0 > 6 {
			t.Errorf("pinging over %s moved %s by %v packets", c.family, c.other, o1-o0)
		}
	}

	// Blocked pings count as drops of their family, with their bytes.
	before := scrape(t, topo.Host)
	c1.Run("ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", ep3.IP6.String())
	c1.Run("ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", ep3.IP.String())
	after := scrape(t, topo.Host)
	for _, c := range []struct {
		family      string
		want, bytes float64
	}{{"ipv6", 3, 3 * 118}, {"ipv4", 2, 2 * 98}} {
		l := map[string]string{"network": "web", "direction": "from_container", "family": c.family, "reason": "isolation"}
		if got := sample(t, after, "bpfnet_network_drops_total", l) - sampleOr(before, "bpfnet_network_drops_total", l); got != c.want {
			t.Errorf("%v: +%v, want +%v", l, got, c.want)
		}
		if got := sample(t, after, "bpfnet_network_drop_bytes_total", l) - sampleOr(before, "bpfnet_network_drop_bytes_total", l); got != c.bytes {
			t.Errorf("%v: +%v bytes, want +%v", l, got, c.bytes)
		}
	}
	// endpoint inspect: the families add up to the totals.
	ep1 := mustEndpoint(t, d, "c1")
	fc := ep1.Counters.FromContainer
	v4, v6 := fc.Families[api.FamilyIPv4], fc.Families[api.FamilyIPv6]
	if v6.Drops["isolation"] != 3 || v4.Drops["isolation"] != 2 || fc.Drops["isolation"] != 5 {
		t.Errorf("c1's isolation drops: %d over IPv4, %d over IPv6, %d in all; want 2, 3, 5", v4.Drops["isolation"], v6.Drops["isolation"], fc.Drops["isolation"])
	}
	if v4.Packets+v6.Packets != fc.Packets || v4.Bytes+v6.Bytes != fc.Bytes || v6.Packets < 23 {
		t.Errorf("c1 sent %d packets (%d bytes); by family %+v and %+v", fc.Packets, fc.Bytes, v4, v6)
	}
}

// bpfnet monitor shows a forbidden ping within a second, with its reason.
func TestMonitor(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf")
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
	// A ping every half second until the monitor, once subscribed,
	// reports one: its event must arrive within a second of the ping.
	// Other drops (the container's IPv6 router solicitations) may come
	// first.
	var sent time.Time
	ping := time.NewTicker(500 * time.Millisecond)
	defer ping.Stop()
	deadline := time.After(15 * time.Second)
	for found := false; !found; {
		select {
		case <-ping.C:
			sent = time.Now()
			go c1.Run("ping", "-n", "-c", "1", "-W", "1", c3addr.String())
		case line := <-lines:
			var ev struct {
				Time                                                 time.Time
				Endpoint, Network, Reason, Proto, Src, Dst, ICMPType string
				Length                                               int
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("monitor printed %q: %v", line, err)
			}
			if ev.Proto != "icmp" {
				continue
			}
			found = true
			if late := time.Since(sent); late > time.Second {
				t.Errorf("the event came %v after the ping", late)
			}
			// A default ping: 98 bytes on the wire (14 + 20 + 8 + 56).
			if ev.Endpoint != "c1" || ev.Network != "web" || ev.Reason != "isolation" || ev.Dst != c3addr.String() ||
				ev.ICMPType != "echo-request" || ev.Length != 98 {
				t.Errorf("event %+v; want c1/web isolation, an icmp echo-request of 98 bytes to %s", ev, c3addr)
			}
		case <-deadline:
			t.Fatal("no event of the forbidden pings within 15 s")
		}
	}
	if _, stderr, code := d.CLI("monitor", "--format", "xml"); code == 0 || !strings.Contains(stderr, "invalid --format") {
		t.Errorf("monitor --format xml: exit %d, %s", code, stderr)
	}
}

// The iptables datapath reports under the same names what it has: packets
// and bytes from the veths' statistics, drops per network from the
// counters of the DROP rules, those of ip6tables included for dual-stack
// networks.
func TestMetricsIptables(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=iptables")
	d.Start()
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "--ipv6", "--subnet", "fd00:18:1::/64", "web")
	d.MustCLI("network", "create", "--subnet", "198.18.2.0/24", "--ipv6", "--subnet", "fd00:18:2::/64", "other")
	d.MustCLI("network", "create", "--subnet", "198.18.3.0/24", "-o", "com.docker.network.bridge.enable_icc=false", "quiet")
	c1, c3, q1, q2 := testnet.NewNS(t, "c1"), testnet.NewNS(t, "c3"), testnet.NewNS(t, "q1"), testnet.NewNS(t, "q2")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	d.MustCLI("endpoint", "create", "--network", "other", "--netns", c3.Path, "--name", "c3")
	d.MustCLI("endpoint", "create", "--network", "quiet", "--netns", q1.Path, "--name", "q1")
	d.MustCLI("endpoint", "create", "--network", "quiet", "--netns", q2.Path, "--name", "q2")
	before := scrape(t, topo.Host)
	c1.Run("ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", mustAddr(t, d, "c3").String())
	q1.Run("ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", mustAddr(t, d, "q2").String())
	// Over IPv6 too (routed by the host, so the neighbour discovery
	// between c1 and its gateway is not forwarded, and not counted).
	c1.Run("ping", "-n", "-q", "-c", "4", "-i", "0.2", "-W", "1", mustEndpoint(t, d, "c3").IP6.String())
	after := scrape(t, topo.Host)
	for _, c := range []struct {
		network, dir, family, reason string
		want, bytes                  float64
	}{
		// iptables counts IP lengths: 84 bytes a default ping (20 IPv4,
		// 8 ICMP, 56 data), 104 over IPv6 (a 40-byte header, 8 ICMPv6).
		{"other", "to_container", "ipv4", "isolation", 3, 3 * 84},
		{"other", "to_container", "ipv6", "isolation", 4, 4 * 104},
		{"quiet", "to_container", "ipv4", "icc", 2, 2 * 84},
	} {
		l := map[string]string{"network": c.network, "direction": c.dir, "family": c.family, "reason": c.reason}
		if got := sample(t, after, "bpfnet_network_drops_total", l) - sampleOr(before, "bpfnet_network_drops_total", l); got != c.want {
			t.Errorf("%v: +%v, want +%v", l, got, c.want)
		}
		if got := sample(t, after, "bpfnet_network_drop_bytes_total", l) - sampleOr(before, "bpfnet_network_drop_bytes_total", l); got != c.bytes {
			t.Errorf("%v: +%v bytes, want +%v", l, got, c.bytes)
		}
	}
	l := map[string]string{"endpoint": "c1", "direction": "from_container"}
	if got, kernel := sample(t, after, "bpfnet_endpoint_packets_total", l), linkStat(t, c1, "eth0", "tx_packets"); got < 3 || got > kernel {
		t.Errorf("c1 from_container: %v packets, the kernel counted %v", got, kernel)
	}
	// Packets come from interface statistics, which have no family.
	if sample(t, after, "bpfnet_network_packets_total", map[string]string{"network": "web", "direction": "from_container", "family": ""}) < 3 {
		t.Errorf("no network packets without a family")
	}
	if !strings.Contains(after, `bpfnet_datapath_info{attach="",mode="iptables"} 1`) {
		t.Errorf("no datapath info for iptables mode")
	}
}

// sampleOr is sample, 0 when the series does not exist yet.
func sampleOr(text, name string, labels map[string]string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for k, v := range labels {
			ok = ok && strings.Contains(line, k+`="`+v+`"`)
		}
		if ok {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return 0
}

// A removed endpoint's series disappear; --metrics-per-endpoint=false
// keeps only the per-network totals.
func TestMetricsSeries(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf")
	d.Start()
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
	c1 := testnet.NewNS(t, "c1")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	c1.Run("ping", "-n", "-q", "-c", "1", "-W", "1", "198.18.1.1")
	if !strings.Contains(scrape(t, topo.Host), `endpoint="c1"`) {
		t.Fatal("no series of c1")
	}
	d.MustCLI("endpoint", "rm", "c1")
	if text := scrape(t, topo.Host); strings.Contains(text, `endpoint="c1"`) {
		t.Errorf("series of the removed endpoint remain")
	}
	d.Stop()
	d.Args = append(d.Args, "--metrics-per-endpoint=false")
	d.Start()
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	c1.Run("ping", "-n", "-q", "-c", "1", "-W", "1", "198.18.1.1")
	text := scrape(t, topo.Host)
	if strings.Contains(text, "bpfnet_endpoint_") {
		t.Errorf("per-endpoint series with --metrics-per-endpoint=false")
	}
	if sample(t, text, "bpfnet_network_packets_total", map[string]string{"network": "web", "direction": "from_container"}) == 0 {
		t.Errorf("no network totals")
	}
}

// A scrape with 1,000 endpoints (2,000 series of each per-endpoint
// metric) fits the 50 ms budget: of 20 whole HTTP scrapes (reading and
// encoding included) the fastest, the best estimate of the cost itself on
// a shared two-core machine, must be within it, and the median within
// three times it.
func TestScrapeCost(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf")
	d.Start()
	d.MustCLI("network", "create", "--subnet", "198.18.0.0/16", "big")
	ctx := context.Background()
	for c := range 10 {
		ns := testnet.NewNS(t, fmt.Sprintf("m%d", c))
		for i := range 100 {
			if _, err := d.Client.CreateEndpoint(ctx, endpointReq("big", ns.Path, fmt.Sprintf("e%d", i), fmt.Sprintf("m%d-%d", c, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	var took []float64
	for range 20 {
		start := time.Now()
		text := scrape(t, topo.Host)
		took = append(took, time.Since(start).Seconds())
		if n := strings.Count(text, "\nbpfnet_endpoint_packets_total{"); n != 2000 {
			t.Fatalf("%d packet series, want 2000", n)
		}
	}
	slices.Sort(took)
	med := took[len(took)/2]
	t.Logf("scrape with 1000 endpoints: median %.1f ms (min %.1f, max %.1f)", med*1000, took[0]*1000, took[len(took)-1]*1000)
	if took[0] > 0.050 || med > 0.150 {
		t.Errorf("scrape took %.1f ms at best, %.1f ms median; budget 50 ms", took[0]*1000, med*1000)
	}
}
