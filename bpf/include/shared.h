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
	REASON_UNSOLICITED = 4, /* from outside, not a reply to a tracked flow; from a container, a FIN, RST or ICMP error of no translated flow */
	REASON_MALFORMED = 5,   /* truncated or invalid headers, VLAN tags */
	REASON_UNSUPPORTED = 6, /* not IPv4/ARP; IPv6 other than link-local neighbour and multicast listener discovery */
	REASON_FRAGMENT = 7,    /* later fragment whose first fragment was not allowed */
	REASON_NO_ENDPOINT = 8, /* program runs on an interface the maps do not know */
	REASON_NAT_EXHAUSTED = 9, /* no free port for a new masqueraded flow */
	REASON_ROUTER = 10,       /* a container sent an IPv6 router message: RA, redirect or MLD query */
	REASON_FLOW_LIMIT = 11,   /* a new flow over its endpoint's or remote's quota, or the table is full */
	REASON_MAX = 16,
};

/* Counter directions, seen from the container. */
enum direction {
	DIR_FROM_CONTAINER = 0,
	DIR_TO_CONTAINER = 1,
};

/* The IP family a counter counts: IPv6 frames apart from the rest (IPv4,
 * the ARP that serves it, and the odd frame of another type). */
enum family {
	FAMILY_IPV4 = 0,
	FAMILY_IPV6 = 1,
	FAMILY_MAX,
};

/* Network flags. */
enum network_flag {
	NET_F_ICC = 1 << 0,
	NET_F_INTERNAL = 1 << 1,
	NET_F_MASQUERADE = 1 << 2,
};

/* Datapath-wide event counters (stats map index). */
enum stat {
	STAT_NAT_CREATED = 0,   /* new source translations */
	STAT_NAT_EXHAUSTED = 1, /* flows refused: no free port */
	STAT_NAT_EXPIRED = 2,   /* expired translations removed by the programs */
	STAT_CT_EXPIRED = 3,    /* expired connection-table entries removed by the programs */
	STAT_FAST_OUT = 4,      /* container → outside sent straight to the uplink */
	STAT_FAST_IN = 5,       /* outside → container delivered straight into the container */
	STAT_FAST_LOCAL = 6,    /* container → container delivered straight into the container */
	STAT_EVENTS_SUPPRESSED = 7, /* drop events not sent: over events_per_sec */
	STAT_EVENTS_LOST = 8,       /* drop events not sent: ring buffer full */
	STAT_DNAT_CREATED = 9,      /* connections to published ports (from outside or containers) */
	STAT_SOCK_DNAT = 10,        /* host sockets sent to a published port's container */
	STAT_UPLINK_SPOOFED = 11,   /* packets on an uplink with a host, loopback or managed source: dropped */
	STAT_CT_LIVE = 12,          /* connection-table entries now (per-CPU deltas; the sum is the count) */
	STAT_NAT_LIVE = 13,         /* translations (pairs) now, likewise */
	STAT_FLOW_LIMIT = 14,       /* new flows refused: endpoint or remote quota reached, or table full */
	STAT_HOST_TAKEOVER = 15,    /* a container's translation given up to a host flow using its tuple */
	STAT_MAX = 16,
};

/* Connection-table entry flags. */
enum ct_flag {
	CT_F_REPLIED = 1 << 0, /* a reply has been seen */
	CT_F_FIN = 1 << 1,     /* a FIN has been seen (either direction, believed) */
	CT_F_RST = 1 << 2,     /* a RST has been seen (either direction, believed) */
	CT_F_ACKED = 1 << 3,   /* the container has acknowledged something: tcp_track holds its window */
	CT_F_FIN_OWN = 1 << 4,  /* the container has sent a FIN */
	CT_F_FIN_PEER = 1 << 5, /* the other side's FIN has been believed */
	CT_F_CLOSED = 1 << 6,   /* the second FIN acknowledged the first: the ACK of it is the flow's last */
	CT_F_SECOND_OWN = 1 << 7, /* ... and the container sent it */
};

/* Endpoint flags. */
enum endpoint_flag {
	EP_F_PUBLISHES = 1 << 0, /* has published ports: its replies may need translating back */
};

/* NAT entry flags, above the connection-table flags (enum ct_flag) that
 * share the field. */
enum nat_flag {
	NAT_F_HOST = 1 << 16,  /* nat_rev entry of a host flow: no translation */
	NAT_F_DNAT = 1 << 17,  /* a connection to a published port (ports.h) */
	NAT_F_LOCAL = 1 << 18, /* ... from a container of this host */
	NAT_F_SELF = 1 << 19,  /* ... from the endpoint itself */
};

/* Modes of the maintenance program (gc.h), in gc_args. */
enum gc_mode {
	GC_EXPIRED = 0, /* remove entries expired for longer than the grace time */
	GC_PURGE = 1,   /* remove every entry that refers to gc_args.addr (a removed endpoint) */
};

/* ep_by_ifindex value: the endpoint behind a host-side veth. */
struct endpoint_info {
	__be32 ip;
	__u32 net_id; /* the network's bridge ifindex */
	__u8 mac[6];
	__u8 flags; /* enum endpoint_flag */
	__u8 pad;
	/* A copy of the network's subnet and flags, so that traffic within
	 * the network is judged without the subnets and networks maps. */
	__be32 subnet;    /* network address */
	__be32 mask;      /* netmask */
	__be32 broadcast; /* the subnet's broadcast address */
	__u32 net_flags;  /* enum network_flag */
	__u32 slot;       /* its entries in traffic: traffic_index(slot, dir, family) */
	/* Its IPv6 address on a dual-stack network; all zero: none (the
	 * network is IPv4-only, and only link-local control traffic passes). */
	__be32 ip6[4];
};

/* ep_by_ip value: where an endpoint address lives, and what delivering
 * to it needs (so a neighbour's packet needs no ep_by_ifindex lookup). */
struct ip_endpoint {
	__u32 ifindex; /* host-side veth */
	__u32 net_id;
	__u32 slot;    /* as in endpoint_info */
	__u8 mac[6];   /* the container's MAC */
	__u8 pad[2];
};

/* networks value. */
struct network_info {
	__u32 flags;      /* enum network_flag */
	__be32 broadcast; /* the subnet's broadcast address */
	__be32 snat_ip;   /* com.docker.network.host_ipv4, 0 = the uplink's */
	__u8 mac[6];      /* the bridge's MAC: the gateway seen from containers */
	__u8 pad[2];
};

/* ports key: a published host port. addr 0 is every host address
 * (0.0.0.0); proto is IPPROTO_TCP or IPPROTO_UDP. */
struct port_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* ports value: where a published port leads. */
struct port_backend {
	__be32 addr;      /* the endpoint's address */
	__be16 port;      /* the container port */
	__u16 pad;
	__u32 ifindex;    /* the endpoint's host-side veth */
	__u32 net_id;
	__be32 gateway;   /* its network's gateway: the source it sees when it reaches its own port */
	__u32 slot;       /* the endpoint's traffic slot: connections to it are charged there */
};

/* sock_rev key: a host socket whose destination a published port
 * rewrote, and the destination it got. */
struct sock_key {
	__u64 cookie; /* socket cookie */
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* sock_rev value: the destination the socket asked for. */
struct sock_orig {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* An IPv6 address: the key of ep_by_ip6 and host_addrs6. */
struct in6_key {
	__be32 a[4];
};

/* ports6 key: a host port published over IPv6 (addr all zero: every host
 * address, [::]). */
struct port6_key {
	struct in6_key addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* ports6 value: port_backend for IPv6. */
struct port_backend6 {
	struct in6_key addr;    /* the endpoint's IPv6 address */
	__be16 port;
	__u16 pad;
	__u32 ifindex;
	__u32 net_id;
	__u32 slot;
	struct in6_key gateway; /* its network's IPv6 gateway */
};

/* sock_rev6 key and value: sock_key and sock_orig for IPv6. */
struct sock_key6 {
	__u64 cookie;
	struct in6_key addr;
	__be16 port;
	__u16 pad;
	__u32 pad2;
};

struct sock_orig6 {
	struct in6_key addr;
	__be16 port;
	__u16 pad;
};

/* uplinks value. */
struct uplink_info {
	__be32 addr; /* masquerade source: the uplink's primary IPv4 address */
	__u32 pad;
	struct in6_key addr6; /* IPv6 masquerade source: its first global IPv6 address */
};

/* subnets key (LPM trie). */
struct subnet_key {
	__u32 prefixlen;
	__be32 addr;
};

/* subnets6 key (LPM trie). */
struct subnet6_key {
	__u32 prefixlen;
	__be32 addr[4];
};

/* traffic value (per-CPU array, index traffic_index): every packet an
 * endpoint's veth hooks see, and its frame length. */
struct traffic_counts {
	__u64 packets;
	__u64 bytes;
};

/* drops key (per-CPU hash). */
struct drop_key {
	__u32 ifindex; /* host-side veth, or the bridge for drops not tied to an endpoint */
	__u32 dir;     /* enum direction */
	__u32 family;  /* enum family */
};

/* drops value: dropped packets and their bytes (frame lengths) by enum
 * drop_reason (also counted in traffic when an endpoint's hook dropped
 * them). */
struct drop_counts {
	__u64 packets[REASON_MAX];
	__u64 bytes[REASON_MAX];
};

/* A flow's addresses and ports as seen on the wire in one direction; the
 * key of the conntrack and NAT maps. For ICMP echo the identifier is the
 * port of the side that sent the request, the other port is 0. */
struct tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* tuple for IPv6: the key of conntrack6, nat_fwd6 and nat_rev6. */
struct tuple6 {
	struct in6_key saddr;
	struct in6_key daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* What the programs keep of the container's side of a TCP flow: what it
 * acknowledged last and the window it advertised then, so that a RST or
 * FIN from the other side is believed only inside that window (RFC 5961
 * §3). Valid once CT_F_ACKED is set. */
struct tcp_track {
	__u32 ack;    /* the acknowledgement number it sent last */
	__u32 win;    /* the window it advertised with it, scaled */
	__u8 wscale;  /* its window scale (RFC 7323), from its SYN */
	__u8 pad[3];
	__u32 fin_end; /* as the flow closes: where the FIN awaiting its ACK ends (closing) */
};

/* nat_fwd and nat_rev value: the other side of a translation (nat_fwd: the
 * translated source; nat_rev: the container's). Timestamps and flags as in
 * ct_entry. The forward half holds the pair's charge (slot, remote) and
 * the container's TCP window. */
struct nat_entry {
	__be32 addr;
	__be16 port;
	__u16 mark; /* period_of() when its packets last did their
		     * once-a-second work (untranslate, nat_refresh); 0: never */
	__u64 created;
	__u64 last_seen;
	__u32 flags;
	__u32 ifindex; /* nat_rev: the container's host-side veth; nat_fwd of a
			* hairpin connection: the peer container's */
	__u32 slot;    /* endpoint charged for the pair (0: none) */
	__be32 remote; /* remote source charged for the pair (0: none) */
	struct tcp_track tcp;
};

/* nat_entry for IPv6: the value of nat_fwd6 and nat_rev6. */
struct nat_entry6 {
	struct in6_key addr;
	__be16 port;
	__u16 mark;
	__u32 flags;
	__u64 created;
	__u64 last_seen;
	__u32 ifindex;
	__u32 slot;
	struct in6_key remote;
	struct tcp_track tcp;
};

/* frags and peers for IPv6 (frags6, peers6): the same with 128-bit
 * addresses and the fragment header's 32-bit identification. */
struct frag_key6 {
	struct in6_key saddr;
	struct in6_key daddr;
	__be32 id;
	__u8 proto;
	__u8 pad[3];
};

struct frag_entry6 {
	__u64 seen;
	struct in6_key new_saddr; /* all zero: none */
	struct in6_key new_daddr;
};

struct peer_key6 {
	struct in6_key remote;
	struct in6_key local;
	__u8 proto;
	__u8 pad[3];
};

struct peer_entry6 {
	__u64 seen;
	struct in6_key container; /* all zero: more than one */
};

/* events record: one dropped packet, described as far as its headers
 * could be read: the Ethernet type always; IPv4 addresses (also ARP's
 * sender and target) or IPv6 addresses, the protocol (IPv6: the first
 * next header), TCP and UDP ports (ICMP echo: the identifier as source
 * port) and the ICMP type. Fields it does not have are zero. */
struct drop_event {
	__u64 ts;        /* bpf_ktime_get_ns() */
	__u32 ifindex;   /* where it was counted: a host-side veth, or a bridge */
	__u8 dir;        /* enum direction */
	__u8 reason;     /* enum drop_reason */
	__u8 proto;      /* IPv4 protocol, IPv6 next header */
	__u8 icmp_type;  /* ICMP or ICMPv6 type */
	__be32 saddr;    /* IPv4, or ARP's sender address */
	__be32 daddr;    /* IPv4, or ARP's target address */
	__be16 sport;
	__be16 dport;
	__be16 ethertype;
	__u16 pad;
	__u32 len;       /* frame length */
	__u32 pad2;
	__u8 saddr6[16]; /* IPv6 */
	__u8 daddr6[16];
};

/* ev_budget value: drop events sent by this CPU in the current second. */
struct event_budget {
	__u64 second;
	__u32 used;
	__u32 pad;
};

/* conntrack value. */
struct ct_entry {
	__u64 created;   /* clock_ns() (conntrack.h) */
	__u64 last_seen; /* clock_ns() */
	__u32 flags;     /* enum ct_flag */
	__u32 slot;      /* endpoint charged for the entry (0: none) */
	struct tcp_track tcp;
};

/* gc_args value: what the maintenance program does on its next run. */
struct gc_args {
	__u32 mode;     /* enum gc_mode */
	__be32 addr;    /* GC_PURGE: the address (0: none) */
	__u64 removed;  /* out: entries removed by the run */
	struct in6_key addr6; /* GC_PURGE: the IPv6 address (all zero: none) */
};

/* frags key: a fragmented datagram whose first fragment was allowed. */
struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

/* frags value. */
struct frag_entry {
	__u64 seen;       /* the last fragment; entries older than frag_timeout are gone */
	__be32 new_saddr; /* translation applied to the first fragment (0: none) */
	__be32 new_daddr;
};

/* peers key: a remote that sent replies to a host address or container,
 * by protocol, so that a datagram's later fragment arriving before its
 * first finds where it goes. */
struct peer_key {
	__be32 remote;
	__be32 local; /* the container's address, or the translated one */
	__u8 proto;
	__u8 pad[3];
};

/* peers value. */
struct peer_entry {
	__u64 seen;
	__be32 container; /* where replies to local went (0: more than one container) */
	__u32 pad;
};

#endif
