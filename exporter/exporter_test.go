package exporter

import (
	"fmt"
	"io"
	"net/http/httptest"
	"testing"
)

type fakeSource struct{ snap Snapshot }

func (f fakeSource) Snapshot() (Snapshot, error) { return f.snap, nil }
func (f fakeSource) Datapath() (string, string)  { return "ebpf", "tcx" }

func bigSnapshot(n int) Snapshot {
	var s Snapshot
	for i := range n {
		s.Endpoints = append(s.Endpoints, Endpoint{Network: fmt.Sprintf("net%d", i%10), Endpoint: fmt.Sprintf("ep%d", i), Interface: fmt.Sprintf("veth%07x", i),
			FromContainer: Counts{Packets: 100, Bytes: 10000, Drops: map[string]uint64{"unsupported": 3}},
			ToContainer:   Counts{Packets: 100, Bytes: 10000, Drops: map[string]uint64{"unsupported": 7}}})
	}
	return s
}

// BenchmarkScrape1000 is a whole /metrics request for 1,000 endpoints
// (without reading BPF maps): collection, gathering and encoding.
func BenchmarkScrape1000(b *testing.B) {
	h := Handler(NewCollector(fakeSource{bigSnapshot(1000)}, Options{PerEndpoint: true}), func() bool { return true })
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		io.Copy(io.Discard, rec.Body)
	}
}
