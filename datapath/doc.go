// Package datapath is the eBPF enforcer: it turns networks and endpoints
// into entries of the BPF maps, attaches the programs of bpf/ (through
// loader/) to bridges, host-side veths and uplinks, and reads the
// counters. It never changes the host's topology.
package datapath
