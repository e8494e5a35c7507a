// Package bench holds bpfnet's benchmarks. They build their worlds in
// network namespaces like the tests (internal/testnet) and run only when
// asked for (make bench-nat); each reports medians of interleaved runs and
// ratios measured side by side in one run.
package bench

import (
	"encoding/json"
	"fmt"
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
