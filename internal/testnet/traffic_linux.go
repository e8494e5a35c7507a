package testnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ServicePort is where Serve listens for TCP and UDP.
const ServicePort = 7000

// Serve starts, inside the namespace, a TCP and a UDP server on
// ServicePort (all addresses, IPv4 and, where the namespace has it, IPv6)
// that answer every connection or datagram with "src=<address the server
// saw>", so a probe learns whether and how its source was translated.
// They stop when the test ends.
func (n *NS) Serve(t testing.TB) {
	t.Helper()
	var tl4, tl6 net.Listener
	var ul4, ul6 net.PacketConn
	err := n.Do(func() error {
		var err error
		if tl4, err = net.Listen("tcp4", fmt.Sprintf(":%d", ServicePort)); err != nil {
			return err
		}
		if ul4, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", ServicePort)); err != nil {
			return err
		}
		// IPv6 only where the namespace has it (not disabled): a probe
		// over IPv6 is then refused, which a test expecting IPv6 reports.
		if tl6, err = net.Listen("tcp6", fmt.Sprintf("[::]:%d", ServicePort)); err != nil {
			return nil
		}
		if ul6, err = net.ListenPacket("udp6", fmt.Sprintf("[::]:%d", ServicePort)); err != nil {
			tl6.Close()
			tl6 = nil
		}
		return nil
	})
	if err != nil {
		t.Fatalf("serve in %s: %v", n.Name, err)
	}
	for _, l := range []net.Listener{tl4, tl6} {
		if l == nil {
			continue
		}
		t.Cleanup(func() { l.Close() })
		go serveTCP(l)
	}
	for _, c := range []net.PacketConn{ul4, ul6} {
		if c == nil {
			continue
		}
		t.Cleanup(func() { c.Close() })
		if err := serveUDP(c); err != nil {
			t.Fatal(err)
		}
	}
}

func serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		fmt.Fprintf(c, "src=%s\n", host)
		c.Close()
	}
}

// serveUDP answers each datagram from the address it was sent to: a
// wildcard-bound socket would otherwise answer from the route's preferred
// source, and the prober's connected socket would discard the reply.
func serveUDP(c net.PacketConn) error {
	// read returns a datagram's sender and how to answer it.
	var read func(buf []byte) (from net.Addr, reply func([]byte), err error)
	if c.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		pc := ipv4.NewPacketConn(c)
		if err := pc.SetControlMessage(ipv4.FlagDst, true); err != nil {
			return err
		}
		read = func(buf []byte) (net.Addr, func([]byte), error) {
			_, cm, from, err := pc.ReadFrom(buf)
			var src *ipv4.ControlMessage
			if cm != nil {
				src = &ipv4.ControlMessage{Src: cm.Dst}
			}
			return from, func(b []byte) { pc.WriteTo(b, src, from) }, err
		}
	} else {
		pc := ipv6.NewPacketConn(c)
		if err := pc.SetControlMessage(ipv6.FlagDst, true); err != nil {
			return err
		}
		read = func(buf []byte) (net.Addr, func([]byte), error) {
			_, cm, from, err := pc.ReadFrom(buf)
			var src *ipv6.ControlMessage
			if cm != nil {
				src = &ipv6.ControlMessage{Src: cm.Dst}
			}
			return from, func(b []byte) { pc.WriteTo(b, src, from) }, err
		}
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			from, reply, err := read(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(from.String())
			reply([]byte("src=" + host + "\n"))
		}
	}()
	return nil
}

// ErrBlocked is returned by probes that got no answer in time.
var ErrBlocked = errors.New("no answer (blocked)")

func parseSrc(b []byte) (netip.Addr, error) {
	s := strings.TrimSpace(string(b))
	a, err := netip.ParseAddr(strings.TrimPrefix(s, "src="))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("unexpected answer %q", s)
	}
	return a, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// ErrRefused is returned by probes that were refused: a TCP RST or an
// ICMP port unreachable (nothing listens there).
var ErrRefused = errors.New("refused")

// TCP connects from the namespace to dst:ServicePort and returns the source
// address the server saw; ErrBlocked if nothing answered within timeout.
func (n *NS) TCP(dst netip.Addr, timeout time.Duration) (netip.Addr, error) {
	return n.TCPTo(netip.AddrPortFrom(dst, ServicePort), timeout)
}

// TCPTo is TCP to any port; ErrRefused if the connection was refused.
func (n *NS) TCPTo(dst netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	var src netip.Addr
	err := n.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.Dial(family("tcp", dst.Addr()), dst.String())
		if err != nil {
			return probeError(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		buf := make([]byte, 64)
		k, err := c.Read(buf)
		if err != nil {
			return probeError(err)
		}
		src, err = parseSrc(buf[:k])
		return err
	})
	return src, err
}

// probeError maps a timeout to ErrBlocked and a refusal to ErrRefused.
func probeError(err error) error {
	switch {
	case isTimeout(err):
		return ErrBlocked
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return err
}

// UDP sends a datagram from the namespace to dst:ServicePort and returns
// the source address the server saw; ErrBlocked if no reply came in time.
func (n *NS) UDP(dst netip.Addr, timeout time.Duration) (netip.Addr, error) {
	return n.UDPTo(netip.AddrPortFrom(dst, ServicePort), timeout)
}

// UDPTo is UDP to any port; ErrRefused on an ICMP port unreachable.
func (n *NS) UDPTo(dst netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	var src netip.Addr
	err := n.Do(func() error {
		c, err := net.Dial(family("udp", dst.Addr()), dst.String())
		if err != nil {
			return err
		}
		defer c.Close()
		deadline := time.Now().Add(timeout)
		c.SetDeadline(deadline)
		buf := make([]byte, 64)
		// Resend a few times: the first datagram may wait for ARP.
		for time.Now().Before(deadline) {
			if _, err := c.Write([]byte("probe")); err != nil {
				return probeError(err)
			}
			c.SetReadDeadline(minTime(deadline, time.Now().Add(timeout/4)))
			k, err := c.Read(buf)
			if err == nil {
				src, err = parseSrc(buf[:k])
				return err
			}
			if !isTimeout(err) {
				return probeError(err)
			}
		}
		return ErrBlocked
	})
	return src, err
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// family is network ("tcp", "udp") for dst's family: "tcp4" or "tcp6".
func family(network string, dst netip.Addr) string {
	if dst.Unmap().Is4() {
		return network + "4"
	}
	return network + "6"
}

// Ping sends ICMP (ICMPv6 for an IPv6 dst) echo requests from the
// namespace to dst until one is answered by dst or timeout passes.
func (n *NS) Ping(dst netip.Addr, timeout time.Duration) error {
	network, any, proto := "ip4:icmp", "0.0.0.0", 1
	var request, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if !dst.Unmap().Is4() {
		network, any, proto = "ip6:ipv6-icmp", "::", 58
		request, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	return n.Do(func() error {
		c, err := icmp.ListenPacket(network, any)
		if err != nil {
			return err
		}
		defer c.Close()
		id := rand.IntN(0xffff)
		deadline := time.Now().Add(timeout)
		buf := make([]byte, 1500)
		for seq := 1; time.Now().Before(deadline); seq++ {
			msg := icmp.Message{Type: request, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("bpfnet-probe")}}
			b, _ := msg.Marshal(nil) // the kernel computes the ICMPv6 checksum
			if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
				return err
			}
			c.SetReadDeadline(minTime(deadline, time.Now().Add(timeout/4)))
			for {
				k, from, err := c.ReadFrom(buf)
				if err != nil {
					break // resend
				}
				m, err := icmp.ParseMessage(proto, buf[:k])
				if err != nil || m.Type != reply {
					continue
				}
				if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && from.String() == dst.String() {
					return nil
				}
			}
		}
		return ErrBlocked
	})
}

// EchoServer serves, in the namespace on TCP port, lines echoed back, until
// the test ends.
func (n *NS) EchoServer(t testing.TB, port int) {
	t.Helper()
	n.EchoServerConns(t, port, nil)
}

// EchoServerConns is EchoServer that also sends conns each connection it
// accepts (the server's side), when conns is not nil.
func (n *NS) EchoServerConns(t testing.TB, port int, conns chan<- net.Conn) {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func() (err error) { ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if conns != nil {
				conns <- c
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
}

// RoundTrip sends msg as a line on an echo connection and checks that it
// comes back within 3 seconds.
func RoundTrip(c net.Conn, r *bufio.Reader, msg string) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg+"\n" {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}
