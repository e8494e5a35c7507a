package testnet

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Raw frames, for tests that play an attacker: frames built by the test
// (forged sources, blind resets, router advertisements) sent on an
// interface of the namespace, and frames seen on one.

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket opens an AF_PACKET socket on ifname of the namespace that
// sees every protocol.
func (n *NS) packetSocket(ifname string) (int, int, error) {
	var fd, index int
	err := n.Do(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		index = ifc.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %s: %w", ifname, err)
		}
		return nil
	})
	return fd, index, err
}

// SendFrame sends a whole Ethernet frame out of ifname of the namespace.
func (n *NS) SendFrame(ifname string, frame []byte) error {
	fd, index, err := n.packetSocket(ifname)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: index, Halen: 6, Addr: [8]byte(append(frame[:6:6], 0, 0))})
}

// Sniffer counts the frames seen on an interface that match a predicate.
type Sniffer struct {
	fd    int
	stop  atomic.Bool
	mu    sync.Mutex
	count int
	seen  [][]byte
	done  chan struct{}
}

// Sniff starts counting the frames that arrive on or leave ifname of the
// namespace and match; Stop ends it and returns the count.
func (n *NS) Sniff(ifname string, match func(frame []byte) bool) (*Sniffer, error) {
	fd, _, err := n.packetSocket(ifname)
	if err != nil {
		return nil, err
	}
	s := &Sniffer{fd: fd, done: make(chan struct{})}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	go func() {
		defer close(s.done)
		buf := make([]byte, 65536)
		for !s.stop.Load() {
			k, _, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			if match(buf[:k]) {
				s.mu.Lock()
				s.count++
				s.seen = append(s.seen, append([]byte(nil), buf[:k]...))
				s.mu.Unlock()
			}
		}
	}()
	return s, nil
}

// Stop ends the capture and returns how many frames matched (and them).
func (s *Sniffer) Stop() (int, [][]byte) {
	s.stop.Store(true)
	<-s.done // the receive times out within 100 ms
	unix.Close(s.fd)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, s.seen
}

// MAC returns the hardware address of ifname in the namespace.
func (n *NS) MAC(ifname string) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := n.Do(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err == nil {
			mac = ifc.HardwareAddr
		}
		return err
	})
	return mac, err
}
