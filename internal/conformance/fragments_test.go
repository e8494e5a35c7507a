package conformance

import (
	"bytes"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bpfnet/bpfnet/internal/testnet"
)

// Datagrams larger than the path's MTU travel as IP fragments, which
// carry no ports after the first (RFC 791). A masqueraded container must
// get them whole, in both datapaths, whatever order they arrive in: the
// iptables datapath reassembles them in the host (conntrack), the eBPF
// one translates each fragment and leaves the reassembly to the
// container. The later fragments coming first is the case where the eBPF
// datapath has only the sender's recent replies to go by.
func TestFragmentedDatagrams(t *testing.T) {
	for _, dp := range hostileDatapaths {
		t.Run(dp, func(t *testing.T) {
			a := newArena(t, dp)
			// A UDP socket in the victim, and a peer on the outside that
			// answers every datagram with "ok" and remembers the source
			// it saw (the victim's, as translated).
			var c, peer net.PacketConn
			err := a.victim.Do(func() (err error) {
				c, err = net.ListenPacket("udp4", ":0")
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = a.topo.Outside.Do(func() (err error) {
				peer, err = net.ListenPacket("udp4", ":7301")
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			seen := make(chan seenDatagram, 4)
			go func() {
				buf := make([]byte, 65536)
				for {
					n, from, err := peer.ReadFrom(buf)
					if err != nil {
						return
					}
					seen <- seenDatagram{n: n, from: from.(*net.UDPAddr).AddrPort()}
					peer.WriteTo([]byte("ok"), from)
				}
			}()
			outside := netip.AddrPortFrom(testnet.OutsideAddr, 7301)
			// exchange sends size bytes to the peer and returns the source
			// the peer saw, after checking the answer came back.
			exchange := func(t *testing.T, size int) netip.AddrPort {
				t.Helper()
				if _, err := c.WriteTo(bytes.Repeat([]byte{'x'}, size), net.UDPAddrFromAddrPort(outside)); err != nil {
					t.Fatal(err)
				}
				var s seenDatagram
				select {
				case s = <-seen:
				case <-time.After(3 * time.Second):
					t.Fatalf("the peer got no %d-byte datagram", size)
				}
				if s.n != size || s.from.Addr() != testnet.UplinkAddr {
					t.Fatalf("the peer got %d bytes from %s, want %d from %s", s.n, s.from, size, testnet.UplinkAddr)
				}
				if got := receive(t, c); string(got) != "ok" {
					t.Fatalf("the victim got %q, want the peer's answer", got)
				}
				return s.from
			}

			// First: a fragmented reply taking the host's stack (below) records
			// the peer under the container's address, and hides the case.
			t.Run("the reply's later fragments before its first", func(t *testing.T) {
				translated := exchange(t, 10) // whole datagrams both ways
				payload := make([]byte, 2992)
				for i := range payload {
					payload[i] = byte(i)
				}
				frags := fragmentUDP(t, testnet.OutsideAddr, translated.Addr(), 7301, translated.Port(), payload, 0x4242)
				for _, f := range append(frags[1:], frags[0]) {
					a.fromOutside(t, f...)
				}
				if got := receive(t, c); !bytes.Equal(got, payload) {
					t.Fatalf("the victim got %d bytes, want the %d the peer sent in fragments", len(got), len(payload))
				}
			})

			t.Run("a datagram of 3000 bytes each way", func(t *testing.T) {
				translated := exchange(t, 3000)
				big := bytes.Repeat([]byte{'y'}, 3000)
				if _, err := peer.WriteTo(big, net.UDPAddrFromAddrPort(translated)); err != nil {
					t.Fatal(err)
				}
				if got := receive(t, c); !bytes.Equal(got, big) {
					t.Fatalf("the victim got %d bytes, want the peer's 3000", len(got))
				}
			})

			// toPublished sends 3000 bytes from ns to the victim's port
			// published on the uplink address and expects its answer,
			// naming the source it saw.
			toPublished := func(t *testing.T, ns *testnet.NS, src netip.Addr) {
				t.Helper()
				var conn *net.UDPConn
				err := ns.Do(func() (err error) {
					conn, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(testnet.UplinkAddr, 5353)))
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := conn.Write(bytes.Repeat([]byte{'z'}, 3000)); err != nil {
					t.Fatal(err)
				}
				if got, want := string(receive(t, conn)), "src="+src.String()+"\n"; got != want {
					t.Fatalf("the published port answered %q, want %q", got, want)
				}
			}
			t.Run("a datagram of 3000 bytes to a published port", func(t *testing.T) {
				toPublished(t, a.topo.Outside, testnet.OutsideAddr)
			})
			t.Run("a datagram of 3000 bytes to a published port, from a neighbour", func(t *testing.T) {
				toPublished(t, a.mallory, a.ips["mallory"])
			})

			t.Run("ping with 3000 bytes", func(t *testing.T) {
				out, err := exec.Command("ip", "netns", "exec", a.victim.Name, "ping", "-n", "-c", "2", "-s", "3000", "-W", "2", testnet.OutsideAddr.String()).CombinedOutput()
				if err != nil {
					t.Fatalf("ping: %v\n%s", err, out)
				}
			})
		})
	}
}

type seenDatagram struct {
	n    int
	from netip.AddrPort
}

// receive reads one datagram from c, failing after 3 s.
func receive(t *testing.T, c net.PacketConn) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the victim got nothing: %v", err)
	}
	return buf[:n]
}

// fragmentUDP is the UDP datagram src:sport → dst:dport carrying payload,
// its checksum computed over the whole of it, cut into IPv4 fragments of
// at most 1480 bytes of data (a 1500-byte MTU) with identification id:
// the layers of each fragment, first to last.
func fragmentUDP(t *testing.T, src, dst netip.Addr, sport, dport uint16, payload []byte, id uint16) [][]gopacket.SerializableLayer {
	t.Helper()
	ip := ipv4(src.String(), dst.String(), layers.IPProtocolUDP)
	whole := serializeLayers(t, ip, &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, gopacket.Payload(payload))
	udp := whole[20:] // the UDP header and payload, as one datagram
	var frags [][]gopacket.SerializableLayer
	for off := 0; off < len(udp); off += 1480 {
		end := min(off+1480, len(udp))
		h := ipv4(src.String(), dst.String(), layers.IPProtocolUDP)
		h.Id, h.FragOffset = id, uint16(off/8)
		if end < len(udp) {
			h.Flags = layers.IPv4MoreFragments
		}
		frags = append(frags, []gopacket.SerializableLayer{h, gopacket.Payload(udp[off:end])})
	}
	if len(frags) < 3 {
		t.Fatalf("%d fragments; the test needs at least 3", len(frags))
	}
	return frags
}
