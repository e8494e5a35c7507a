/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the datapath. All are pinned by name under the daemon's
 * bpffs root, so a restart of the daemon keeps state and enforcement.
 */
#ifndef BPFNET_MAPS_H
#define BPFNET_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "shared.h"

/* Endpoints a host can have: each has a slot of traffic counters. */
#define MAX_ENDPOINTS 16384
#define MAX_NETWORKS 16384
/* The host's IPv4 addresses: a gateway per network, plus the rest. */
#define MAX_HOST_ADDRS (MAX_NETWORKS + 1024)
/* Tracked flows and translations. Plain hashes, not LRU: a full table
 * refuses new flows (flow_limit) instead of evicting live ones, and the
 * per-endpoint and per-remote quotas (flows.h) keep one tenant from
 * filling it. */
#define MAX_FLOWS 262144

/* host-side veth ifindex → endpoint; written by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ep_by_ifindex SEC(".maps");

/* endpoint IPv4 address → veth and network; written by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, __be32);
	__type(value, struct ip_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ep_by_ip SEC(".maps");

/* endpoint IPv6 address (dual-stack networks) → veth and network; written
 * by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct in6_key);
	__type(value, struct ip_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ep_by_ip6 SEC(".maps");

/* network id (bridge ifindex) → flags; written by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_NETWORKS);
	__type(key, __u32);
	__type(value, struct network_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} networks SEC(".maps");

/* managed subnet → network id; written by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_NETWORKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct subnet_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} subnets SEC(".maps");

/* managed IPv6 subnet (dual-stack networks) → network id; written by the
 * control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_NETWORKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct subnet6_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} subnets6 SEC(".maps");

/* global IPv6 address of the host namespace → 1; written by the control
 * plane from the kernel's address list. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_HOST_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct in6_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} host_addrs6 SEC(".maps");

/* IPv4 address of the host namespace → 1; written by the control plane
 * from the kernel's address list. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_HOST_ADDRS);
	__type(key, __be32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} host_addrs SEC(".maps");

/* published ports → the endpoint behind them; written by the control
 * plane. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct port_key);
	__type(value, struct port_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ports SEC(".maps");

/* host sockets sent to a published port's container: the destination
 * they asked for, so replies (recvmsg) and getpeername show it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, struct sock_orig);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_rev SEC(".maps");

/* ports and sock_rev for IPv6: written and read likewise. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct port6_key);
	__type(value, struct port_backend6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ports6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key6);
	__type(value, struct sock_orig6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_rev6 SEC(".maps");

static __always_inline int is_host_addr(__be32 a)
{
	return bpf_map_lookup_elem(&host_addrs, &a) != 0;
}

/* flows containers started towards the outside; written by from_container,
 * refreshed by the replies, expired entries removed by the programs and by
 * the maintenance program (gc.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct tuple);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

/* fragmented datagrams whose first fragment was allowed (and how it was
 * translated); written by to_container, from_uplink and to_uplink. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct frag_key);
	__type(value, struct frag_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

/* frags for IPv6 datagrams (fragment headers); written likewise. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct frag_key6);
	__type(value, struct frag_entry6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags6 SEC(".maps");

/* peers for IPv6; written likewise. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct peer_key6);
	__type(value, struct peer_entry6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} peers6 SEC(".maps");

/* remotes that replied to a container (or its translated address) lately,
 * by protocol; written by from_uplink, read for later fragments that
 * arrive before their first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct peer_key);
	__type(value, struct peer_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} peers SEC(".maps");

/* translations by the container's tuple → translated source (or, for a
 * published port, the host address and port the peer used); written by
 * to_uplink, from_uplink and from_container (nat.h, ports.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct tuple);
	__type(value, struct nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_fwd SEC(".maps");

/* translations by the reply's tuple on the wire → the container's address
 * and port; written with nat_fwd, read by from_uplink. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct tuple);
	__type(value, struct nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_rev SEC(".maps");

/* conntrack, nat_fwd and nat_rev for IPv6 flows (dual-stack networks).
 * Not preallocated: on IPv4-only hosts they stay empty. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tuple6);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tuple6);
	__type(value, struct nat_entry6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_fwd6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tuple6);
	__type(value, struct nat_entry6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_rev6 SEC(".maps");

/* endpoint slot → entries of conntrack and translations charged to it;
 * written by the programs (atomically), zeroed by the control plane when it
 * hands out the slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ep_flows SEC(".maps");

/* remote IPv4 source → connections to published ports charged to it;
 * written by the programs. LRU: with more remotes than entries, the least
 * recent one's count starts over (more permissive, never less). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __be32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} remote_flows SEC(".maps");

/* remote_flows for IPv6 remote sources. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct in6_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} remote_flows6 SEC(".maps");

/* 0 → what the maintenance program does next; written by the control
 * plane before it runs the program. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gc_args);
} gc_args SEC(".maps");

/* uplink ifindex → masquerade address; written by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct uplink_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} uplinks SEC(".maps");

/* enum stat → count (per CPU); written by the programs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

/* drop events for `bpfnet monitor`; written by the programs (at most
 * events_per_sec per CPU), read by the daemon. Not pinned: events are not
 * state. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* 0 → this CPU's event budget; written by the programs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_budget);
} ev_budget SEC(".maps");

/* traffic_index(slot, direction, family) → packets and bytes of an
 * endpoint (per CPU); the control plane gives every endpoint a slot
 * (endpoint_info.slot) and zeroes its entries before use. An array, so
 * counting is an index, not a hash lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * FAMILY_MAX * MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct traffic_counts);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} traffic SEC(".maps");

/* (ifindex, direction, family) → drops by reason (per CPU); written by
 * the programs, read (and deleted with the endpoint) by the control plane.
 * Two per endpoint and one per bridge, for each family. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, FAMILY_MAX * (2 * MAX_ENDPOINTS + MAX_NETWORKS));
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct drop_key);
	__type(value, struct drop_counts);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drops SEC(".maps");

#endif
