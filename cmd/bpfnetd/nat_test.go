package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/bpf"
	"github.com/bpfnet/bpfnet/internal/testnet"
	"github.com/bpfnet/bpfnet/network"
)

// peerServer answers, on UDP and TCP port 7200 of ns, with the source
// address and port it sees. TCP connections stay open until the client
// closes them.
func peerServer(t *testing.T, ns *testnet.NS) {
	var pc net.PacketConn
	var ln net.Listener
	err := ns.Do(func() (err error) {
		if pc, err = net.ListenPacket("udp4", ":7200"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", ":7200")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	// Thousands of flows start at once: a default-sized receive buffer
	// would drop datagrams before the server reads them.
	if rc, err := pc.(*net.UDPConn).SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) })
	}
	go func() {
		buf := make([]byte, 256)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(from.String()), from)
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte(c.RemoteAddr().String() + "\n"))
				io := make([]byte, 1)
				c.Read(io) // until the client closes
			}()
		}
	}()
}

var outsidePeer = netip.AddrPortFrom(testnet.OutsideAddr, 7200)

// 5,000 concurrent UDP flows and 1,000 TCP connections from two
// containers to the outside: every flow gets its own translated address
// and port, and every reply reaches the socket that sent the request.
func TestManyFlows(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf", "--forward-rule=false")
	d.Start()
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
	peerServer(t, topo.Outside)
	const udpPer, tcpPer = 2500, 500
	var (
		mu   sync.Mutex
		seen = map[string]string{} // protocol and translated addr:port → flow
	)
	// A translation is unique per protocol: a UDP and a TCP flow may share
	// an address and port, as they do without NAT.
	record := func(t *testing.T, flow, translated string) {
		mu.Lock()
		defer mu.Unlock()
		ap, err := netip.ParseAddrPort(strings.TrimSpace(translated))
		if err != nil || ap.Addr() != testnet.UplinkAddr {
			t.Errorf("%s: the peer saw %q, want the uplink address", flow, translated)
			return
		}
		key := strings.Fields(flow)[1] + " " + ap.String()
		if other, dup := seen[key]; dup {
			t.Errorf("%s and %s share the translation %s", flow, other, key)
		}
		seen[key] = flow
	}
	var wg sync.WaitGroup
	inflight := make(chan struct{}, 256) // UDP exchanges at a time
	for _, name := range []string{"c1", "c2"} {
		ns := testnet.NewNS(t, name)
		d.MustCLI("endpoint", "create", "--network", "web", "--netns", ns.Path, "--name", name)
		var udps []*net.UDPConn
		var tcps []net.Conn
		err := ns.Do(func() error {
			for range udpPer {
				c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(outsidePeer))
				if err != nil {
					return err
				}
				udps = append(udps, c)
			}
			for range tcpPer {
				c, err := net.DialTimeout("tcp4", outsidePeer.String(), 5*time.Second)
				if err != nil {
					return err
				}
				tcps = append(tcps, c)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() {
			for _, c := range udps {
				c.Close()
			}
			for _, c := range tcps {
				c.Close()
			}
		})
		for i, c := range tcps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					t.Errorf("%s tcp %d: %v", name, i, err)
					return
				}
				record(t, fmt.Sprintf("%s tcp %s", name, c.LocalAddr()), line)
			}()
		}
		for i, c := range udps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				inflight <- struct{}{}
				defer func() { <-inflight }()
				buf := make([]byte, 64)
				// Datagrams may be lost on a busy machine: retry a few times.
				for try := 0; try < 5; try++ {
					c.Write([]byte("hello"))
					c.SetReadDeadline(time.Now().Add(time.Second))
					n, err := c.Read(buf)
					if err == nil {
						record(t, fmt.Sprintf("%s udp %s", name, c.LocalAddr()), string(buf[:n]))
						return
					}
				}
				t.Errorf("%s udp %d: no reply", name, i)
			}()
		}
	}
	wg.Wait()
	if len(seen) != 2*(udpPer+tcpPer) {
		t.Errorf("%d distinct translations, want %d", len(seen), 2*(udpPer+tcpPer))
	}
	st, err := d.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Stats["nat_entries"] < 2*(udpPer+tcpPer) {
		t.Errorf("nat_entries = %d, want at least %d", st.Stats["nat_entries"], 2*(udpPer+tcpPer))
	}
	if st.Stats["nat_exhausted"] != 0 {
		t.Errorf("nat_exhausted = %d", st.Stats["nat_exhausted"])
	}
	if out := d.MustCLI("nat", "ls"); strings.Count(out, "\n") < 2*(udpPer+tcpPer) {
		t.Errorf("nat ls lists %d lines", strings.Count(out, "\n"))
	}
}

// With --nat-ports of three ports, a fourth connection to the same peer is
// refused and counted (nat_exhausted), the three keep working, and once
// they are reset their ports are free at once: a reset flow holds nothing
// (before, its translation stayed 10 s after the RST).
func TestNATExhaustion(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf", "--nat-ports=61000-61002") // above the host's ephemeral ports (32768-60999), which containers never get
	d.PinBPFFS()                                                                       // the test reads the drops map
	d.Start()
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
	c1 := testnet.NewNS(t, "c1")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	topo.Outside.EchoServer(t, 7100)
	peer := netip.AddrPortFrom(testnet.OutsideAddr, 7100).String()
	dial := func() (net.Conn, error) {
		var c net.Conn
		err := c1.Do(func() (err error) { c, err = net.DialTimeout("tcp4", peer, 2*time.Second); return })
		return c, err
	}
	var conns []net.Conn
	for i := range 3 {
		c, err := dial()
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatal("a fourth connection got through with three ports")
	}
	if n := pinnedDrops(t, d, topo.Host, mustEndpoint(t, d, "c1").HostIf, bpf.BpfnetDropReasonREASON_NAT_EXHAUSTED); n == 0 {
		t.Errorf("no nat_exhausted drop counted on c1")
	}
	for i, c := range conns {
		if err := testnet.RoundTrip(c, bufio.NewReader(c), fmt.Sprint("still ", i)); err != nil {
			t.Errorf("connection %d after exhaustion: %v", i+1, err)
		}
		c.(*net.TCPConn).SetLinger(0) // close with a RST
		c.Close()
	}
	// The RSTs went out with Close; the ports are free well inside the
	// 10 s a reset translation used to keep them (a failed dial takes 2 s).
	c, err := dial()
	if err != nil {
		t.Fatalf("new connection after the others were reset: %v\n%s", err, d.MustCLI("nat", "ls"))
	}
	c.Close()
}

// A remote that connects to a published port again and again is never
// refused, and leaves nothing behind once its connections are over: a
// reset connection, and one closed in order, hold no entry and no charge.
// 20,000 connections from one address, more than the 16,384 it may hold
// (flows_per_remote), each from its own client port (a reused tuple would
// end the old connection's entry and hide a held charge). Before issue
// 16's fixes each reset connection held its charge 40 s, each closed one
// 150 s, and the 16,385th was refused.
//   - reset: as in the sweep's connection-rate workload, the server closes
//     at once and the client resets, so the server's FIN often crosses the
//     RST: that FIN is dropped, never masqueraded from another port;
//   - closed: the client sends a line, reads it back and closes; the
//     server closes when it reads the end (a FIN each way, the client's
//     last ACK ends the flow).
func TestPublishedConnectionsHoldNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(net.Conn)
		use   func(*net.TCPConn) error
	}{
		{"reset", func(c net.Conn) { c.Close() }, func(c *net.TCPConn) error {
			c.SetLinger(0) // close with a RST, as the sweep's client does
			return c.Close()
		}},
		{"closed", func(c net.Conn) { io.Copy(c, c); c.Close() }, func(c *net.TCPConn) error {
			if err := testnet.RoundTrip(c, bufio.NewReader(c), "hello"); err != nil {
				return err
			}
			return c.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { testPublishedConnections(t, tc.serve, tc.use) })
	}
}

func testPublishedConnections(t *testing.T, serve func(net.Conn), use func(*net.TCPConn) error) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host) // the defaults: the default network, auto datapath
	d.Start()
	if st, err := d.Client.Status(context.Background()); err != nil || st.Datapath != "ebpf" {
		t.Fatalf("datapath %q (%v): the quota is the eBPF datapath's", st.Datapath, err)
	}
	c1 := testnet.NewNS(t, "c1")
	d.MustCLI("endpoint", "create", "--network", network.DefaultNetworkName, "--netns", c1.Path, "--name", "c1", "-p", "8080:7100")
	var ln net.Listener
	if err := c1.Do(func() (err error) { ln, err = net.Listen("tcp4", ":7100"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	const conns = 20000
	done := 0
	err := topo.Outside.Do(func() error {
		for i := range conns {
			dialer := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{Port: 10000 + i}}
			c, err := dialer.Dial("tcp4", netip.AddrPortFrom(testnet.UplinkAddr, 8080).String())
			if err == nil {
				err = use(c.(*net.TCPConn))
			}
			if err != nil {
				return fmt.Errorf("connection %d: %w", i+1, err)
			}
			done++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after %d of %d connections: %v", done, conns, err)
	}
	// The last connections' final packets may still be on their way.
	var st api.Status
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if st, err = d.Client.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st.Stats["nat_entries"] == 0 && st.Stats["ct_entries"] == 0 || time.Now().After(deadline) {
			break
		}
	}
	if st.Stats["flow_limit"] != 0 || st.Stats["nat_entries"] != 0 || st.Stats["ct_entries"] != 0 || st.Stats["nat_created"] != 0 {
		t.Errorf("flow_limit %d, nat_entries %d, ct_entries %d, nat_created %d: want nothing refused, held or masqueraded",
			st.Stats["flow_limit"], st.Stats["nat_entries"], st.Stats["ct_entries"], st.Stats["nat_created"])
	}
}

// A bulk TCP transfer through the masquerade, with both CPUs busy, arrives
// whole: every segment and ACK is translated on whatever CPU handles it.
func TestBulkTransfer(t *testing.T) {
	topo := testnet.NewTopology(t)
	d := testnet.NewDaemon(t, topo.Host, "--datapath=ebpf")
	d.Start()
	d.MustCLI("network", "create", "--subnet", "198.18.1.0/24", "web")
	c1 := testnet.NewNS(t, "c1")
	d.MustCLI("endpoint", "create", "--network", "web", "--netns", c1.Path, "--name", "c1")
	var ln net.Listener
	if err := topo.Outside.Do(func() (err error) { ln, err = net.Listen("tcp4", ":7300"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		c.Write([]byte("done"))
		got <- n
	}()
	const size = 256 << 20
	var conn net.Conn
	if err := c1.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(testnet.OutsideAddr, 7300).String(), 3*time.Second)
		return
	}); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 1<<20)
	for sent := 0; sent < size; sent += len(buf) {
		if _, err := conn.Write(buf); err != nil {
			t.Fatalf("after %d MB: %v", sent>>20, err)
		}
	}
	conn.(*net.TCPConn).CloseWrite()
	if n := <-got; n != size {
		t.Errorf("peer received %d bytes, want %d", n, size)
	}
	if b, err := io.ReadAll(conn); err != nil || string(b) != "done" {
		t.Errorf("closing exchange: %q %v", b, err)
	}
}
