// Package bench holds bpfnet's benchmarks. They build their worlds in
// network namespaces like the tests (internal/testnet) and run only when
// asked for (make bench-nat); each reports medians of interleaved runs and
// ratios measured side by side in one run.
package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveBinaries()
	os.Exit(code)
}

var sockperfMedian = regexp.MustCompile(`percentile 50\.000 =\s+([0-9.]+)`)

// tcpRR runs a 64-byte TCP ping-pong from ns to dst:11111 (sockperf, both
// ends pinned to CPU 0) for d and returns the median round trip in µs.
func tcpRR(t *testing.T, ns *testnet.NS, dst string, d time.Duration) float64 {
	out, err := ns.Run("taskset", "-c", "0", "sockperf", "ping-pong", "--tcp", "-i", dst, "-p", "11111", "-m", "64",
		"-t", strconv.Itoa(int(d.Seconds())))
	m := sockperfMedian.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("sockperf: %v\n%s", err, out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// tcpStream runs one iperf3 TCP stream from ns to dst for d and returns
// the received rate in Gbit/s.
func tcpStream(t *testing.T, ns *testnet.NS, dst string, d time.Duration) float64 {
	out, err := ns.Run("iperf3", "-c", dst, "-t", strconv.Itoa(int(d.Seconds())), "-J")
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.End.SumReceived.BitsPerSecond == 0 {
		t.Fatalf("iperf3: %v\n%s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// machine describes where the numbers come from.
func machine() string {
	kernel, _ := exec.Command("uname", "-r").Output()
	cpu, _ := exec.Command("sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").Output()
	return fmt.Sprintf("kernel %s, %d CPUs (%s)", strings.TrimSpace(string(kernel)), numCPU(), strings.TrimSpace(string(cpu)))
}

func numCPU() int {
	out, _ := exec.Command("nproc").Output()
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

// target is where a world's workloads run: from a namespace to an address
// whose sockperf and iperf3 servers are already up.
type target struct {
	name string
	from *testnet.NS
	dst  string
}

// measure runs TCP request/response and one TCP stream against every
// target, interleaved (A B C A B C …) -runs times, and returns the
// medians by target name.
func measure(t *testing.T, targets []target) (rr, stream map[string]float64) {
	rrs, streams := map[string][]float64{}, map[string][]float64{}
	for run := range *natRuns {
		for _, w := range targets {
			rrs[w.name] = append(rrs[w.name], tcpRR(t, w.from, w.dst, *natTime))
			streams[w.name] = append(streams[w.name], tcpStream(t, w.from, w.dst, *natTime))
			t.Logf("run %d %s: rr %.2f µs, stream %.2f Gbit/s", run+1, w.name, rrs[w.name][run], streams[w.name][run])
		}
	}
	rr, stream = map[string]float64{}, map[string]float64{}
	for name := range rrs {
		rr[name], stream[name] = median(rrs[name]), median(streams[name])
	}
	return rr, stream
}

// ratioTable is the Markdown table of the medians, each with its ratio to
// the base target's.
func ratioTable(targets []target, rr, stream map[string]float64, base string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| world | TCP RR 64 B, median round trip | ÷ %s | one TCP stream | ÷ %s |\n|---|---|---|---|---|\n", base, base)
	for _, w := range targets {
		fmt.Fprintf(&b, "| %s | %.2f µs | %.2f | %.2f Gbit/s | %.2f |\n", w.name, rr[w.name], rr[w.name]/rr[base], stream[w.name], stream[w.name]/stream[base])
	}
	return b.String()
}

// writeReport logs the report and writes it to path (when set).
func writeReport(t *testing.T, path, report string) {
	t.Log("\n" + report)
	if path == "" {
		return
	}
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
}

// connPort is where serveConnections listens.
const connPort = 12000

// serveConnections accepts TCP connections on addr:connPort inside ns and
// closes them, until the test ends.
func serveConnections(t *testing.T, ns *testnet.NS, addr string) {
	serveTCP(t, ns, addr, connPort, func(c net.Conn) { c.Close() })
}

// serveTCP listens on addr:port inside ns and hands every connection to
// handle (in its own goroutine), until the test ends.
func serveTCP(t *testing.T, ns *testnet.NS, addr string, port int, handle func(net.Conn)) {
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
}

// tcpConnRate opens connections from ns to dst:connPort one after the
// other for d, each closed with a RST (no TIME_WAIT to exhaust ports),
// and returns connections per second.
func tcpConnRate(t *testing.T, ns *testnet.NS, dst string, d time.Duration) float64 {
	n := 0
	err := ns.Do(func() error {
		addr := net.JoinHostPort(dst, strconv.Itoa(connPort))
		for end := time.Now().Add(d); time.Now().Before(end); n++ {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return err
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("connection rate to %s: %v", dst, err)
	}
	return float64(n) / d.Seconds()
}

// udpRate sends 64-byte UDP datagrams from ns to dst as fast as iperf3
// can (client on CPU 0) for d and returns the datagrams per second the
// receiver got.
func udpRate(t *testing.T, ns *testnet.NS, dst string, d time.Duration) float64 {
	out, err := ns.Run("taskset", "-c", "0", "iperf3", "-c", dst, "-u", "-b", "0", "-l", "64", "-t", strconv.Itoa(int(d.Seconds())), "-J")
	var r struct {
		End struct {
			Sum struct {
				Packets     float64 `json:"packets"`
				LostPackets float64 `json:"lost_packets"`
				Seconds     float64 `json:"seconds"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.End.Sum.Seconds == 0 {
		t.Fatalf("iperf3 -u: %v\n%s", err, out)
	}
	return (r.End.Sum.Packets - r.End.Sum.LostPackets) / r.End.Sum.Seconds
}

// rrPort is where serveEcho listens.
const rrPort = 12001

// serveEcho answers every 64-byte message on addr:rrPort inside ns with
// the same 64 bytes, until the test ends: the request/response server of
// the IPv6 sweep (Debian 12's sockperf, 3.7, has no IPv6).
func serveEcho(t *testing.T, ns *testnet.NS, addr string) {
	serveTCP(t, ns, addr, rrPort, func(c net.Conn) {
		defer c.Close()
		c.(*net.TCPConn).SetNoDelay(true)
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
}

// goRR sends 64-byte requests from ns to dst:rrPort over one TCP
// connection, each after the previous answer, for d, and returns the
// median round trip in µs: the IPv6 sweep's rr (serveEcho). Client and
// server are goroutines of this process, so a round trip includes two Go
// scheduler wake-ups that sockperf's does not: compare it only with
// itself.
func goRR(t *testing.T, ns *testnet.NS, dst string, d time.Duration) float64 {
	var rtts []float64
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(dst, strconv.Itoa(rrPort)), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.(*net.TCPConn).SetNoDelay(true)
		buf := make([]byte, 64)
		for end := time.Now().Add(d); time.Now().Before(end); {
			start := time.Now()
			if _, err := c.Write(buf); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
			rtts = append(rtts, float64(time.Since(start).Nanoseconds())/1000)
		}
		return nil
	})
	if err != nil || len(rtts) == 0 {
		t.Fatalf("request/response to %s: %v", dst, err)
	}
	return median(rtts)
}
