/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types shared between the BPF programs and the Go control plane
 * (datapath/). Every struct is fixed-width with explicit padding; bpf2go
 * generates the Go side from this object's BTF and bpf/btf_test.go checks
 * the sizes.
 */
#ifndef BPFNET_SHARED_H
#define BPFNET_SHARED_H

#include <linux/types.h>

/* Why a packet was dropped: the index into counters.drops. The names
 * (lower case, without the prefix) are the `reason` label of the metrics. */
enum drop_reason {
	REASON_ICC = 0,         /* same network, enable_icc=false */
	REASON_ISOLATION = 1,   /* destination in another managed network */
	REASON_INTERNAL = 2,    /* into or out of an --internal network */
	REASON_SPOOF = 3,       /* source IP or MAC is not the endpoint's */
	REASON_UNSOLICITED = 4, /* from outside, not a reply to a tracked flow */
	REASON_MALFORMED = 5,   /* truncated or invalid headers, VLAN tags */
	REASON_UNSUPPORTED = 6, /* not IPv4/ARP; IPv6 other than neighbour discovery */
	REASON_FRAGMENT = 7,    /* later fragment whose first fragment was not allowed */
	REASON_NO_ENDPOINT = 8, /* program runs on an interface the maps do not know */
	REASON_NAT_EXHAUSTED = 9, /* no free port for a new masqueraded flow */
	REASON_MAX = 16,
};

/* Counter directions, seen from the container. */
enum direction {
	DIR_FROM_CONTAINER = 0,
	DIR_TO_CONTAINER = 1,
};

/* Network flags. */
enum network_flag {
	NET_F_ICC = 1 << 0,
	NET_F_INTERNAL = 1 << 1,
	NET_F_MASQUERADE = 1 << 2,
};

/* Connection-table entry flags. */
enum ct_flag {
	CT_F_REPLIED = 1 << 0, /* a reply has been seen */
	CT_F_FIN = 1 << 1,     /* a FIN has been seen (either direction) */
	CT_F_RST = 1 << 2,     /* a RST has been seen (either direction) */
};

/* ep_by_ifindex value: the endpoint behind a host-side veth. */
struct endpoint_info {
	__be32 ip;
	__u32 net_id; /* the network's bridge ifindex */
	__u8 mac[6];
	__u8 pad[2];
};

/* ep_by_ip value: where an endpoint address lives. */
struct ip_endpoint {
	__u32 ifindex; /* host-side veth */
	__u32 net_id;
};

/* networks value. */
struct network_info {
	__u32 flags;     /* enum network_flag */
	__be32 broadcast; /* the subnet's broadcast address */
	__be32 snat_ip;  /* com.docker.network.host_ipv4, 0 = the uplink's */
	__u32 pad;
};

/* subnets key (LPM trie). */
struct subnet_key {
	__u32 prefixlen;
	__be32 addr;
};

/* counters key (per-CPU hash). */
struct counter_key {
	__u32 ifindex; /* host-side veth, or the bridge for drops not tied to an endpoint */
	__u32 dir;     /* enum direction */
};

/* counters value: every packet the hook sees is counted in packets and
 * bytes (frame length); drops also in drops[reason]. */
struct counter_values {
	__u64 packets;
	__u64 bytes;
	__u64 drops[REASON_MAX];
};

/* conntrack key: a flow in the direction it was started (container →
 * outside). For ICMP echo sport is the identifier and dport 0. */
struct ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* conntrack value. */
struct ct_entry {
	__u64 created;   /* bpf_ktime_get_ns() */
	__u64 last_seen; /* bpf_ktime_get_ns() */
	__u32 flags;     /* enum ct_flag */
	__u32 pad;
};

/* frags key: a fragmented datagram whose first fragment was allowed. */
struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

#endif
