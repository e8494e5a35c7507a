package datapath

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
)

var (
	progCost       = flag.Bool("progcost", false, "measure each program's cost per packet (make bench-progs)")
	progCostReport = flag.String("progcost-report", "", "write the Markdown table to this file")
)

// TestProgramCost runs each program on a representative packet and
// reports the time per packet as the kernel measures it (the `duration`
// of BPF_PROG_TEST_RUN with one repeat, so every run sees the original
// packet even where a program rewrites it; median of 20,000 runs). The
// maps hold the test world, warmed by a first run (connection-table and
// translation entries exist, as for a flow's later packets).
//
//	make bench-progs   # go test ./datapath -run TestProgramCost -progcost -v
func TestProgramCost(t *testing.T) {
	if !*progCost {
		t.Skip("benchmark: run with -progcost (make bench-progs)")
	}
	w := newWorld(t, nil)
	e1, e2, e3 := w.eps["e1"], w.eps["e2"], w.eps["e3"]
	toNeighbour := serialize(t, append([]gopacket.SerializableLayer{eth(mac(e1.mac), mac(e2.mac), layers.EthernetTypeIPv4)}, ipPacket(t, e1.ip, e2.ip, tcp(40000, 80))...)...)
	out := w.from(t, "e1", outsideAddr, tcp(40000, 80))
	w.run(t, w.coll.FromContainer, e1.ifindex, out)
	w.outbound(t, out)
	// An empty program, measured the same way, shows what the harness
	// itself costs per run.
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	// Floors for from_uplink on a reply: only the lookups it cannot do
	// without, nothing else (replyFloor).
	var floors [2]*ebpf.Program
	for i, all := range []bool{false, true} {
		if floors[i], err = replyFloor(w, all); err != nil {
			t.Fatal(err)
		}
		defer floors[i].Close()
	}
	reply := ipFrame(t, outsideAddr, uplinkAddr, tcpAck(80, 40000))
	cases := []struct {
		name    string
		prog    *ebpf.Program
		ifindex int
		frame   []byte
		want    uint32
		ingress int // skb->ingress_ifindex: a bridged frame's sender's veth
	}{
		{"(an empty program: the measurement's own cost)", empty, e1.ifindex, out, actOK, 0},
		{"from_container: same network, to the bridge", w.coll.FromContainer, e1.ifindex, w.from(t, "e1", e2.ip, tcp(40000, 80)), actOK, 0},
		{"from_container: same network, straight to the neighbour", w.coll.FromContainer, e1.ifindex, toNeighbour, actRedirect, 0},
		{"from_container: icc drop", w.coll.FromContainer, e3.ifindex, w.from(t, "e3", w.eps["e4"].ip, tcp(40000, 80)), actShot, 0},
		{"from_container: isolation drop", w.coll.FromContainer, e1.ifindex, w.from(t, "e1", e3.ip, tcp(40000, 80)), actShot, 0},
		{"from_container: to the outside (flow recorded)", w.coll.FromContainer, e1.ifindex, out, actOK, 0},
		{"to_container: bridged from a neighbour", w.coll.ToContainer, e2.ifindex, ipFrame(t, e1.ip, e2.ip, tcp(40000, 80)), actOK, e1.ifindex},
		{"to_container: reply from the outside, routed in", w.coll.ToContainer, e1.ifindex, ipFrame(t, outsideAddr, e1.ip, tcpAck(80, 40000)), actOK, 0},
		{"to_uplink: masquerade, existing translation", w.coll.ToUplink, w.uplink, out, actUnspc, 0},
		{"to_uplink: masquerade, an established flow's segment", w.coll.ToUplink, w.uplink, w.from(t, "e1", outsideAddr, tcpAck(40000, 80)), actUnspc, 0},
		{"from_uplink: reply translated back, into the container", w.coll.FromUplink, w.uplink, reply, actRedirect, 0},
		// The floors return 1 when what they looked up for was found.
		{"(a floor for from_uplink's reply: its translation's lookup alone)", floors[0], w.uplink, reply, 1, 0},
		{"(a floor for from_uplink's reply: the translation, host-address, subnet and endpoint lookups alone)", floors[1], w.uplink, reply, 1, 0},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| program and packet | ns per packet, one run | ns per packet, %d runs in one call |\n|---|---|---|\n", batch)
	for _, c := range cases {
		w.ingress = c.ingress
		runs, ret := runCost(t, w, c.prog, c.ifindex, c.frame, 1, 20000)
		if ret != c.want {
			t.Fatalf("%s: return %d, want %d", c.name, ret, c.want)
		}
		// Repeating a program in one call runs it on the packet it left
		// behind, which is the same packet only where it rewrites nothing.
		amortised := "— (rewrites the packet)"
		if _, _, after := w.runData(t, c.prog, c.ifindex, c.frame); bytes.Equal(after, c.frame) {
			batches, _ := runCost(t, w, c.prog, c.ifindex, c.frame, batch, 200)
			amortised = fmt.Sprint(median(batches))
		}
		fmt.Fprintf(&b, "| %s | %d | %s |\n", c.name, median(runs), amortised)
	}
	t.Log("\n" + b.String())
	if *progCostReport != "" {
		os.WriteFile(*progCostReport, []byte(b.String()), 0o644)
	}
}

// replyFloor is a program that makes, on an IPv4 TCP or UDP reply
// without options from the outside, the lookups a reply translated back
// cannot do without, on the world's maps: its translation (nat_rev) and,
// with all, its source among the host's addresses and in the managed
// subnets (the spoofing check) and the container's endpoint (its MAC and
// counters). It returns 1 when what it looked up for was found, else 0.
// Everything else from_uplink does (parse, clock, rewrite and checksums,
// network, counters, delivery) is left out: what it costs is below any
// design that keeps these checks.
func replyFloor(w *world, all bool) (*ebpf.Program, error) {
	const (
		skbData, skbDataEnd = 76, 80 // offsetof(struct __sk_buff, data), data_end
		ip                  = 14     // the IPv4 header, after Ethernet
	)
	lookup := func(m *ebpf.Map, key int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(key)),
			asm.FnMapLookupElem.Call(),
		}
	}
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, ip+20+4),
		asm.JGT.Reg(asm.R4, asm.R3, "miss"),
		// struct tuple at fp-16: source, destination, both ports, protocol
		// (a word: the byte, then the padding's zeros).
		asm.LoadMem(asm.R5, asm.R2, ip+12, asm.Word),
		asm.StoreMem(asm.RFP, -16, asm.R5, asm.Word),
		asm.StoreMem(asm.RFP, -24, asm.R5, asm.Word), // host_addrs' key
		asm.StoreMem(asm.RFP, -28, asm.R5, asm.Word), // subnets' key: the address...
		asm.StoreImm(asm.RFP, -32, 32, asm.Word),     // ... and its prefix length
		asm.LoadMem(asm.R5, asm.R2, ip+16, asm.Word),
		asm.StoreMem(asm.RFP, -12, asm.R5, asm.Word),
		asm.LoadMem(asm.R5, asm.R2, ip+20, asm.Word),
		asm.StoreMem(asm.RFP, -8, asm.R5, asm.Word),
		asm.LoadMem(asm.R5, asm.R2, ip+9, asm.Byte),
		asm.StoreMem(asm.RFP, -4, asm.R5, asm.Word),
	}
	insns = append(insns, lookup(w.coll.NatRev, -16)...)
	insns = append(insns,
		asm.JEq.Imm(asm.R0, 0, "miss"),
		asm.LoadMem(asm.R5, asm.R0, 0, asm.Word), // nat_entry.addr: the container's
		asm.StoreMem(asm.RFP, -40, asm.R5, asm.Word),
	)
	if all {
		insns = append(insns, lookup(w.coll.HostAddrs, -24)...)
		insns = append(insns, lookup(w.coll.Subnets, -32)...)
		insns = append(insns, lookup(w.coll.EpByIp, -40)...)
	}
	insns = append(insns,
		asm.JEq.Imm(asm.R0, 0, "miss"),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("miss"),
		asm.Return(),
	)
	return ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
}

// batch is how many runs one BPF_PROG_TEST_RUN call makes for the
// amortised column.
const batch = 1000

func median(v []uint32) uint32 {
	slices.Sort(v)
	return v[len(v)/2]
}

// runCost makes n BPF_PROG_TEST_RUN calls that each run prog `repeat`
// times, and returns the kernel's duration per run of each call (ns) and
// the last return code.
func runCost(t *testing.T, w *world, prog *ebpf.Program, ifindex int, frame []byte, repeat uint32, n int) ([]uint32, uint32) {
	ctx := w.skb(ifindex)
	out := make([]byte, len(frame)+256)
	var durations []uint32
	var ret uint32
	err := w.ns.Do(func() error {
		for range n {
			// union bpf_attr, the test member (linux/bpf.h).
			var attr [80]byte
			le := binary.NativeEndian
			le.PutUint32(attr[0:], uint32(prog.FD()))
			le.PutUint32(attr[8:], uint32(len(frame)))
			le.PutUint32(attr[12:], uint32(len(out)))
			le.PutUint64(attr[16:], uint64(uintptr(unsafe.Pointer(&frame[0]))))
			le.PutUint64(attr[24:], uint64(uintptr(unsafe.Pointer(&out[0]))))
			le.PutUint32(attr[32:], repeat)
			le.PutUint32(attr[40:], uint32(len(ctx)))
			le.PutUint64(attr[48:], uint64(uintptr(unsafe.Pointer(&ctx[0]))))
			_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
			for errno == unix.EINTR { // a signal (Go's preemption) cut the call short
				_, _, errno = unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
			}
			if errno != 0 {
				return errno
			}
			ret = le.Uint32(attr[4:])
			durations = append(durations, le.Uint32(attr[36:]))
		}
		runtime.KeepAlive(frame)
		runtime.KeepAlive(out)
		runtime.KeepAlive(ctx)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return durations, ret
}
