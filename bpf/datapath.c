// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore
/*
 * bpfnet's TC programs. One object, loaded once per daemon; the same
 * programs are attached to every interface of their kind.
 *
 * from_container  TC ingress of a host-side veth: what the container sends.
 *                 Drops frames whose source MAC or IP is not the endpoint's
 *                 (spoof), VLAN-tagged or truncated frames (malformed),
 *                 protocols other than IPv4, ARP and IPv6 neighbour
 *                 discovery (unsupported); then judges the destination:
 *                 a host address passes; the own subnet passes unless
 *                 enable_icc=false (icc); another managed subnet is
 *                 isolation (internal if either network is internal);
 *                 anything else is the outside, refused to internal
 *                 networks (internal) and otherwise tracked and passed.
 * to_container    TC egress of a host-side veth: what is about to enter the
 *                 container. Frames bridged from another endpoint are judged
 *                 by their source endpoint (icc, isolation, internal), which
 *                 catches broadcast and multicast. Packets the host stack
 *                 sends into the network (there is no program on the bridge)
 *                 are judged here too: host-originated packets pass; into an
 *                 internal network nothing else does (internal); from the
 *                 outside only replies to tracked flows and ICMP errors
 *                 about them pass (unsolicited, fragment).
 * from_uplink     TC ingress of an uplink: what arrives from the outside.
 *                 Replies to translated flows are translated back (nat.h);
 *                 packets for a managed subnet are judged as by
 *                 to_container and delivered straight into the container
 *                 (fastpath.h), or left to the host's stack with
 *                 forward_mark set. The host's own traffic is untouched.
 * to_uplink       TC egress of an uplink: what leaves to the outside.
 *                 Packets of containers on masquerading networks get the
 *                 uplink's address (or host_ipv4) and a free port
 *                 (nat_exhausted when none is left); the host's own flows
 *                 from that address are recorded so containers never
 *                 collide with them.
 *                 IPv6 likewise on the uplinks (NAT66 to the uplink's IPv6
 *                 address).
 *
 * Passed packets leave with forward_mark set in skb->mark. Every hook on a
 * veth counts packets and bytes per direction and drops per reason.
 * Allowed traffic between containers of a network, and between containers
 * and the outside, skips the bridge, netfilter and routing (fastpath.h).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "shared.h"
#include "maps.h"
#include "parse.h"
#include "conntrack.h"
#include "counters.h"
#include "nat.h"
#include "fastpath.h"
#include "ports.h"
#include "gc.h"

/* skb->mark bit set on every packet a program passes; the daemon's single
 * FORWARD rule accepts packets carrying it. 0 disables marking. */
volatile const __u32 forward_mark = 0;

/* Unused constants that put the shared enums into the object's BTF, from
 * which bpf2go generates their Go constants. */
volatile const enum drop_reason enum_drop_reason;
volatile const enum direction enum_direction;
volatile const enum family enum_family;
volatile const enum network_flag enum_network_flag;
volatile const enum endpoint_flag enum_endpoint_flag;
volatile const enum ct_flag enum_ct_flag;
volatile const enum nat_flag enum_nat_flag;
volatile const enum stat enum_stat;
volatile const enum gc_mode enum_gc_mode;
volatile const struct drop_event type_drop_event;

#define ETH_P_ARP_BE bpf_htons(ETH_P_ARP)
#define ETH_P_IP_BE bpf_htons(ETH_P_IP)
#define ETH_P_IPV6_BE bpf_htons(ETH_P_IPV6)
#define ETH_P_8021Q_BE bpf_htons(ETH_P_8021Q)
#define ETH_P_8021AD_BE bpf_htons(ETH_P_8021AD)

/* The loopback interface's index in every network namespace. */
#define LOOPBACK_IFINDEX 1

static __always_inline int pass(struct __sk_buff *skb)
{
	skb->mark |= forward_mark;
	return TC_ACT_OK;
}

/* Multicast and limited broadcast go to every port of the bridge (and the
 * host); the receiving endpoints' to_container judges them. */
static __always_inline int is_multi(__be32 a)
{
	return (bpf_ntohl(a) & 0xf0000000) == 0xe0000000 || a == 0xffffffff;
}

static __always_inline __u32 *subnet_of(__be32 a)
{
	struct subnet_key k = {.prefixlen = 32, .addr = a};
	return bpf_map_lookup_elem(&subnets, &k);
}

static __always_inline __u32 net_flags(__u32 net_id)
{
	struct network_info *n = bpf_map_lookup_elem(&networks, &net_id);
	return n ? n->flags : 0;
}

/* between judges traffic from an endpoint of network src to an endpoint
 * (or address) of network dst. */
static __always_inline __u32 between(__u32 src, __u32 dst)
{
	if (src == dst)
		return (net_flags(src) & NET_F_ICC) ? PASS : REASON_ICC;
	if ((net_flags(src) | net_flags(dst)) & NET_F_INTERNAL)
		return REASON_INTERNAL;
	return REASON_ISOLATION;
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b && *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

/* ICMPv6 types of the link-local control traffic an IPv4-only network
 * carries (RFC 4861 neighbour discovery, RFC 2710/3810 multicast listener
 * discovery). */
#define FAMILY 4
#include "frags_family.h"
#undef FAMILY
#define FAMILY 6
#include "frags_family.h"
#undef FAMILY

#define ICMPV6_MLD_QUERY 130
#define ICMPV6_MLD_REPORT 131
#define ICMPV6_MLD_DONE 132
#define ICMPV6_RS 133
#define ICMPV6_RA 134
#define ICMPV6_NS 135
#define ICMPV6_NA 136
#define ICMPV6_REDIRECT 137
#define ICMPV6_MLD2_REPORT 143
#define ND_OPT_SOURCE_LL 1
#define ND_OPT_TARGET_LL 2
#define ND_MAX_OPTS 4

static __always_inline int ipv6_unspecified(const __be32 *a)
{
	return (a[0] | a[1] | a[2] | a[3]) == 0;
}

/* nd_options checks the options of a neighbour solicitation or
 * advertisement whose ICMPv6 header is at off: a link-layer address
 * option must carry mac, the sender's own. */
static __always_inline __u32 nd_options(struct __sk_buff *skb, __u32 off, const __u8 *mac)
{
	/* Options follow the type, code, checksum, flags and target (24 bytes). */
	off += 24;
#pragma unroll
	for (int i = 0; i < ND_MAX_OPTS; i++) {
		__u8 opt[2];
		if (bpf_skb_load_bytes(skb, off, opt, 2) < 0)
			return PASS; /* no more options */
		if (opt[1] == 0)
			return REASON_MALFORMED; /* RFC 4861 4.6: a zero length is invalid */
		if (opt[0] == ND_OPT_SOURCE_LL || opt[0] == ND_OPT_TARGET_LL) {
			__u8 ll[8] __attribute__((aligned(8))); /* mac_eq reads it as words */
			if (bpf_skb_load_bytes(skb, off + 2, ll, 6) < 0)
				return REASON_MALFORMED;
			if (!mac_eq(ll, mac))
				return REASON_SPOOF;
		}
		off += opt[1] * 8;
	}
	return PASS;
}

/* ipv6_control judges IPv6 on networks that are IPv4-only: only link-local
 * control traffic passes, i.e. ICMPv6 neighbour discovery (hop limit 255)
 * and multicast listener reports (hop limit 1, after a hop-by-hop header)
 * from a link-local or unspecified source to a link-local or link-scope
 * multicast destination; anything else is unsupported. From a container
 * (sender set) router messages are refused (router: an RA gave the host a
 * default route; a redirect or MLD query steers neighbours), and a
 * neighbour solicitation or advertisement must carry the container's own
 * MAC in its link-layer option (spoof). */
static __always_inline __u32 ipv6_control(struct __sk_buff *skb, const struct endpoint_info *sender)
{
	struct ipv6hdr ip6;
	__u32 off = ETH_HLEN + sizeof(ip6);
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
		return REASON_MALFORMED;
	__u8 next = ip6.nexthdr;
	if (next == IPPROTO_HOPOPTS) {
		/* MLD reports carry a router-alert option (RFC 2711). */
		__u8 hbh[2];
		if (bpf_skb_load_bytes(skb, off, hbh, 2) < 0)
			return REASON_MALFORMED;
		next = hbh[0];
		off += (hbh[1] + 1) * 8;
	}
	if (next != IPPROTO_ICMPV6)
		return REASON_UNSUPPORTED;
	__u8 type;
	if (bpf_skb_load_bytes(skb, off, &type, 1) < 0)
		return REASON_MALFORMED;
	const __be32 *s = ip6.saddr.in6_u.u6_addr32, *d = ip6.daddr.in6_u.u6_addr32;
	int src_ll = (bpf_ntohl(s[0]) & 0xffc00000) == 0xfe800000;
	int dst_ok = (bpf_ntohl(d[0]) & 0xffc00000) == 0xfe800000 || (bpf_ntohl(d[0]) & 0xffff0000) == 0xff020000;
	int nd = type >= ICMPV6_RS && type <= ICMPV6_REDIRECT;
	int mld = (type >= ICMPV6_MLD_QUERY && type <= ICMPV6_MLD_DONE) || type == ICMPV6_MLD2_REPORT;
	if (!dst_ok || !(nd || mld) || ip6.hop_limit != (nd ? 255 : 1))
		return REASON_UNSUPPORTED;
	/* The unspecified source: duplicate address detection (an NS) and the
	 * reports sent while it runs. */
	if (!src_ll && !(ipv6_unspecified(s) && (type == ICMPV6_NS || type == ICMPV6_MLD2_REPORT || type == ICMPV6_MLD_REPORT)))
		return REASON_UNSUPPORTED;
	if (!sender)
		return PASS;
	if (type == ICMPV6_RA || type == ICMPV6_REDIRECT || type == ICMPV6_MLD_QUERY)
		return REASON_ROUTER;
	if (type != ICMPV6_NS && type != ICMPV6_NA)
		return PASS;
	return nd_options(skb, off, sender->mac);
}

/* IPv6 on dual-stack networks. */

static __always_inline int ip6_link_local(const __be32 *a)
{
	return (bpf_ntohl(a[0]) & 0xffc00000) == 0xfe800000;
}

static __always_inline int ip6_multicast(const __be32 *a)
{
	return (bpf_ntohl(a[0]) >> 24) == 0xff;
}

/* own_link_local reports whether a is the link-local address the kernel
 * gives an interface with mac (fe80::/64 and the modified EUI-64 of the
 * MAC, RFC 4291 appendix A; addr_gen_mode eui64, every namespace's
 * default). */
static __always_inline int own_link_local(const __be32 *a, const __u8 *mac)
{
	if (a[0] != bpf_htonl(0xfe800000) || a[1] != 0)
		return 0;
	__u32 hi = (__u32)(mac[0] ^ 2) << 24 | (__u32)mac[1] << 16 | (__u32)mac[2] << 8 | 0xff;
	__u32 lo = 0xfe000000 | (__u32)mac[3] << 16 | (__u32)mac[4] << 8 | mac[5];
	return a[2] == bpf_htonl(hi) && a[3] == bpf_htonl(lo);
}

/* has_ip6 reports whether ep is on a dual-stack network. */
static __always_inline int has_ip6(const struct endpoint_info *ep)
{
	return (ep->ip6[0] | ep->ip6[1] | ep->ip6[2] | ep->ip6[3]) != 0;
}

static __always_inline int own_ip6(const struct endpoint_info *ep, const __be32 *a)
{
	return ip6_eq(a, ep->ip6) || own_link_local(a, ep->mac);
}

static __always_inline __u32 *subnet6_of(const __be32 *a)
{
	struct subnet6_key k = {.prefixlen = 128};
	__builtin_memcpy(k.addr, a, 16);
	return bpf_map_lookup_elem(&subnets6, &k);
}

/* Where an allowed packet from a container goes. */
enum dest {
	DEST_HOST,      /* multicast, broadcast: the normal path */
	DEST_HOST_ADDR, /* a host address: the host, or a published port */
	DEST_NETWORK,   /* an address of the sender's own network */
	DEST_OUTSIDE,
	DEST_ND,        /* neighbour discovery for an endpoint of its network */
};

/* nd6_peer finds the endpoint a neighbour solicitation (for its target)
 * or advertisement (to its unicast destination) is for, when that is
 * another endpoint the sender may reach (icc): the solicitation then goes
 * to it alone rather than flooding the bridge, and neither walks
 * ip6tables' FORWARD, which bridge netfilter would make them do, where a
 * host's DROP policy stops them (--forward-rule=false). An advertisement
 * to a link-local address takes the bridge. */
static __always_inline void nd6_peer(struct __sk_buff *skb, const struct endpoint_info *ep, const struct pkt6 *p,
				     enum dest *dest, struct ip_endpoint **peer)
{
	struct in6_key target;
	if (p->icmp_type == ICMPV6_NA)
		__builtin_memcpy(&target, &p->daddr, sizeof(target));
	else if (bpf_skb_load_bytes(skb, p->l4_off + 8, &target, sizeof(target)) < 0)
		return;
	struct ip_endpoint *dst = bpf_map_lookup_elem(&ep_by_ip6, &target);
	if (dst && between(ep->net_id, dst->net_id) == PASS) {
		*dest = DEST_ND;
		*peer = dst;
	}
}

/* nd6_from_container judges the neighbour and multicast listener
 * discovery a container of a dual-stack network sends: from its own
 * addresses (the unspecified one for duplicate address detection), to a
 * link-local, link-scope multicast or own-network destination, never a
 * router's message, and advertising only its own addresses and MAC. A
 * solicitation or advertisement for another endpoint gets it as *peer
 * (nd6_peer). */
static __always_inline __u32 nd6_from_container(struct __sk_buff *skb, const struct endpoint_info *ep, const struct pkt6 *p,
						enum dest *dest, struct ip_endpoint **peer)
{
	__u8 type = p->icmp_type;
	if (type == ICMPV6_RA || type == ICMPV6_REDIRECT || type == ICMPV6_MLD_QUERY)
		return REASON_ROUTER;
	int nd = type >= ICMPV6_RS && type <= ICMPV6_REDIRECT;
	if (p->hop_limit != (nd ? 255 : 1))
		return REASON_UNSUPPORTED;
	if (!own_ip6(ep, p->saddr.a) && !(ipv6_unspecified(p->saddr.a) && type != ICMPV6_NA))
		return REASON_SPOOF;
	__u32 *dnet = subnet6_of(p->daddr.a);
	if (!ip6_link_local(p->daddr.a) && (bpf_ntohl(p->daddr.a[0]) >> 16) != 0xff02 && !(dnet && *dnet == ep->net_id))
		return REASON_UNSUPPORTED;
	if (type == ICMPV6_NA) {
		struct in6_key target;
		if (bpf_skb_load_bytes(skb, p->l4_off + 8, &target, sizeof(target)) < 0)
			return REASON_MALFORMED;
		if (!own_ip6(ep, target.a))
			return REASON_SPOOF;
	}
	if (type != ICMPV6_NS && type != ICMPV6_NA)
		return PASS;
	__u32 v = nd_options(skb, p->l4_off, ep->mac);
	if (v == PASS)
		nd6_peer(skb, ep, p, dest, peer);
	return v;
}

/* judge6_from_container returns the verdict for an IPv6 packet an
 * endpoint of a dual-stack network sent: the IPv4 verdicts (icc,
 * isolation, internal; host addresses reachable) with its IPv6 address
 * as the only source, or its link-local one towards the link. */
static __noinline __u32 judge6_from_container(struct __sk_buff *skb, const struct endpoint_info *ep, const struct pkt6 *p,
					    enum dest *dest, struct ip_endpoint **peer)
{
	*dest = DEST_HOST;
	/* A first fragment counts too: a router advertisement in fragments is
	 * still one (RFC 6980 asks receivers to ignore it; not all may). */
	if (p->proto == IPPROTO_ICMPV6 && p->frag != FRAG_LATER &&
	    ((p->icmp_type >= ICMPV6_MLD_QUERY && p->icmp_type <= ICMPV6_REDIRECT) || p->icmp_type == ICMPV6_MLD2_REPORT))
		return nd6_from_container(skb, ep, p, dest, peer);
	int to_link = ip6_link_local(p->daddr.a) || ip6_multicast(p->daddr.a);
	if (!ip6_eq(p->saddr.a, ep->ip6) && !(to_link && own_link_local(p->saddr.a, ep->mac)))
		return REASON_SPOOF;
	if (ip6_multicast(p->daddr.a))
		return PASS;
	if (ip6_link_local(p->daddr.a)) /* on the link: a neighbour, as far as anyone can tell */
		return between(ep->net_id, ep->net_id);
	struct ip_endpoint *dst = bpf_map_lookup_elem(&ep_by_ip6, p->daddr.a);
	if (dst) {
		*dest = DEST_NETWORK;
		*peer = dst;
		return between(ep->net_id, dst->net_id);
	}
	if (bpf_map_lookup_elem(&host_addrs6, p->daddr.a)) {
		*dest = DEST_HOST_ADDR;
		return PASS;
	}
	__u32 *dnet = subnet6_of(p->daddr.a);
	if (dnet) /* an address of a managed subnet nobody has yet */
		return between(ep->net_id, *dnet);
	if (ep->net_flags & NET_F_INTERNAL)
		return REASON_INTERNAL;
	*dest = DEST_OUTSIDE;
	return ct_outbound6(skb, p, ep->slot);
}

/* judge6_to_container returns the verdict for an IPv6 packet on its way
 * into an endpoint of a dual-stack network, that came in on interface in.
 * A frame bridged from another endpoint's veth had its source checked by
 * that endpoint's from_container: it gets the icc and isolation verdicts.
 * Anything else the host stack sent: its own packets pass (a host address
 * as source, made here or looped back), and what it routed in is the
 * outside's (judge_from_outside). */
static __always_inline __u32 judge6_to_container(struct __sk_buff *skb, const struct endpoint_info *ep, __u32 in)
{
	struct pkt6 p;
	if (parse_ipv6(skb, &p) < 0)
		return REASON_MALFORMED;
	if (in == skb->ifindex)
		return PASS; /* its own frame, hairpinned back */
	struct endpoint_info *src = bpf_map_lookup_elem(&ep_by_ifindex, &in);
	if (src)
		return between(src->net_id, ep->net_id);
	if ((in == 0 || in == LOOPBACK_IFINDEX) && bpf_map_lookup_elem(&host_addrs6, p.saddr.a))
		return PASS;
	/* Router messages and the rest of the link's control traffic come
	 * from the host's link-local addresses. */
	if (in == 0 && ip6_link_local(p.saddr.a))
		return PASS;
	return judge_from_outside6(skb, ep->net_flags, &p, UT_NONE, clock_ns());
}

/* ARP for Ethernet/IPv4 whose sender is the endpoint (or 0.0.0.0 for an
 * address probe, RFC 5227). */
struct arp_eth_ipv4 {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

static __always_inline __u32 check_arp(struct __sk_buff *skb, const struct endpoint_info *ep)
{
	pull(skb, ETH_HLEN + sizeof(struct arp_eth_ipv4));
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct arp_eth_ipv4 *arp = data + ETH_HLEN;
	if ((void *)(arp + 1) > end)
		return REASON_MALFORMED;
	if (arp->hrd != bpf_htons(1) || arp->pro != ETH_P_IP_BE || arp->hln != 6 || arp->pln != 4)
		return REASON_MALFORMED;
	if (!mac_eq(arp->sha, ep->mac))
		return REASON_SPOOF;
	__be32 spa;
	__builtin_memcpy(&spa, arp->spa, 4);
	if (spa != ep->ip && spa != 0)
		return REASON_SPOOF;
	return PASS;
}

/* judge_from_container returns the verdict for an IPv4 packet the
 * endpoint sent, and where it goes if allowed; for a neighbour in its
 * network, *peer is that endpoint's ep_by_ip entry. */
static __always_inline __u32 judge_from_container(struct __sk_buff *skb, const struct endpoint_info *ep, const struct pkt *p,
						  enum dest *dest, struct ip_endpoint **peer)
{
	*dest = DEST_HOST;
	if (p->saddr != ep->ip)
		return REASON_SPOOF;
	int own = (p->daddr & ep->mask) == ep->subnet;
	if (own) {
		/* A neighbour first: an endpoint's address is never a host's,
		 * so the common case needs no host_addrs lookup. */
		*peer = bpf_map_lookup_elem(&ep_by_ip, &p->daddr);
		if (*peer && (*peer)->net_id == ep->net_id) {
			*dest = DEST_NETWORK;
			return (ep->net_flags & NET_F_ICC) ? PASS : REASON_ICC;
		}
	}
	if (is_host_addr(p->daddr)) {
		*dest = DEST_HOST_ADDR;
		return PASS;
	}
	if (is_multi(p->daddr))
		return PASS;
	if (own) {
		if (p->daddr == ep->broadcast)
			return PASS;
		*dest = DEST_NETWORK; /* nobody's address yet: the bridge floods or drops it */
		return (ep->net_flags & NET_F_ICC) ? PASS : REASON_ICC;
	}
	/* Subnets do not overlap, so any other managed subnet is another
	 * network's. */
	__u32 *dnet = subnet_of(p->daddr);
	if (dnet)
		return ((ep->net_flags | net_flags(*dnet)) & NET_F_INTERNAL) ? REASON_INTERNAL : REASON_ISOLATION;
	if (ep->net_flags & NET_F_INTERNAL)
		return REASON_INTERNAL;
	*dest = DEST_OUTSIDE;
	return ct_outbound(skb, p, ep->slot);
}

/* veth_frame starts both veth programs: it finds the endpoint behind the
 * veth, counts the frame and checks its Ethernet header. It returns
 * TC_ACT_SHOT after counting a drop, or -1 with *ep and *eth set. */
static __always_inline int veth_frame(struct __sk_buff *skb, __u32 dir, struct endpoint_info **ep, struct ethhdr **eth)
{
	__u32 ifindex = skb->ifindex;
	*ep = bpf_map_lookup_elem(&ep_by_ifindex, &ifindex);
	if (!*ep)
		return drop(skb, ifindex, dir, REASON_NO_ENDPOINT);
	count((*ep)->slot, dir, skb);
	if (skb->vlan_present)
		return drop(skb, ifindex, dir, REASON_MALFORMED);
	pull(skb, ETH_HLEN);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	*eth = data;
	if ((void *)(*eth + 1) > end)
		return drop(skb, ifindex, dir, REASON_MALFORMED);
	return -1;
}

/* 0 → this CPU's IPv6 packet being handled by from_container, from_uplink
 * or to_uplink: on the stack, it would take them over BPF's 512 bytes. A
 * program runs to its end on one CPU, never nested. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pkt6);
} pkt6_scratch SEC(".maps");

/* from_container6 is from_container for IPv6 from an endpoint of a
 * dual-stack network: replies of its published ports' hairpin
 * connections, the verdict, and connections to published ports on host
 * addresses (hairpin), and the fast paths. Its steps are BPF functions of
 * their own, called one after the other, so their stacks never add up. */
static __always_inline int from_container6(struct __sk_buff *skb, const struct endpoint_info *ep)
{
	__u32 ifindex = skb->ifindex, zero = 0;
	struct pkt6 *p = bpf_map_lookup_elem(&pkt6_scratch, &zero);
	if (!p || parse_ipv6(skb, p) < 0)
		return drop(skb, ifindex, DIR_FROM_CONTAINER, REASON_MALFORMED);
	int rc;
	if ((ep->flags & EP_F_PUBLISHES) && ip6_eq(p->saddr.a, ep->ip6)) {
		rc = hairpin_reply6(skb, ep, p);
		if (rc >= 0)
			return rc;
	}
	enum dest dest;
	struct ip_endpoint *peer = 0;
	__u32 v = judge6_from_container(skb, ep, p, &dest, &peer);
	if (v != PASS)
		return drop(skb, ifindex, DIR_FROM_CONTAINER, v);
	rc = -1;
	if (dest == DEST_NETWORK && peer)
		rc = fast_local(skb, ifindex, peer);
	else if (dest == DEST_ND && peer)
		rc = nd_local(skb, ifindex, peer);
	else if (dest == DEST_OUTSIDE)
		rc = fast_out6(skb, ep->net_id, p);
	else if (dest == DEST_HOST_ADDR) {
		rc = hairpin6(skb, ifindex, ep, p);
		if (rc == TC_ACT_REDIRECT)
			hairpin_close6(skb, p); /* after hairpin6: their stacks never add up */
	}
	if (rc >= 0)
		return rc;
	return pass(skb);
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	const __u32 dir = DIR_FROM_CONTAINER;
	struct endpoint_info *ep;
	struct ethhdr *eth;
	int rc = veth_frame(skb, dir, &ep, &eth);
	if (rc >= 0)
		return rc;
	if (!mac_eq(eth->h_source, ep->mac))
		return drop(skb, ifindex, dir, REASON_SPOOF);

	__u32 v;
	switch (eth->h_proto) {
	case ETH_P_ARP_BE:
		v = check_arp(skb, ep);
		break;
	case ETH_P_IPV6_BE:
		if (has_ip6(ep))
			return from_container6(skb, ep);
		v = ipv6_control(skb, ep);
		break;
	case ETH_P_IP_BE: {
		struct pkt p;
		enum dest dest;
		if (parse_ipv4(skb, &p) < 0)
			return drop(skb, ifindex, dir, REASON_MALFORMED);
		__u32 net_id = ep->net_id;
		if ((ep->flags & EP_F_PUBLISHES) && p.saddr == ep->ip) {
			rc = hairpin_reply(skb, ep, &p);
			if (rc >= 0)
				return rc;
		}
		struct ip_endpoint *peer = 0;
		v = judge_from_container(skb, ep, &p, &dest, &peer);
		if (v != PASS)
			return drop_pkt(skb, ifindex, dir, v, &p);
		rc = -1;
		if (dest == DEST_NETWORK && peer)
			rc = fast_local(skb, ifindex, peer);
		else if (dest == DEST_OUTSIDE)
			rc = fast_out(skb, net_id, &p);
		else if (dest == DEST_HOST_ADDR) {
			rc = hairpin(skb, ifindex, ep, &p);
			if (rc == TC_ACT_REDIRECT)
				hairpin_close(skb, &p);
		}
		if (rc >= 0)
			return rc;
		break;
	}
	case ETH_P_8021Q_BE:
	case ETH_P_8021AD_BE:
		v = REASON_MALFORMED; /* a tag would reach VLAN devices unchecked */
		break;
	default:
		v = REASON_UNSUPPORTED;
	}
	if (v != PASS)
		return drop(skb, ifindex, dir, v);
	return pass(skb);
}

/* judge_to_network judges a packet the host stack sends into network
 * net_id, that came in on interface in (0: made by the host). The host's
 * own packets pass: a host address as source, made here or looped back
 * (the kernel drops packets arriving with a local source as martians).
 * A packet routed in from another interface is judged as from the
 * outside even with a host address as source: another bridge masqueraded
 * it (Docker masquerades its networks' traffic to every other interface),
 * and, like Docker 28's direct-access rule, only replies and published
 * ports get through. */
static __always_inline __u32 judge_to_network(struct __sk_buff *skb, __u32 net_id, const struct pkt *p, __u32 in)
{
	if (is_host_addr(p->saddr) && (in == 0 || in == LOOPBACK_IFINDEX))
		return PASS;
	return judge_from_outside(skb, net_flags(net_id), p, UT_NONE, clock_ns());
}

/* drop_to_network drops a packet for network net_id, counted on the
 * endpoint it was meant for, else on the bridge. */
static __always_inline int drop_to_network(struct __sk_buff *skb, __u32 net_id, const struct pkt *p, __u32 reason)
{
	__u32 at = net_id;
	if (p) {
		struct ip_endpoint *dst = bpf_map_lookup_elem(&ep_by_ip, &p->daddr);
		if (dst && dst->net_id == net_id)
			at = dst->ifindex;
	}
	return drop_pkt(skb, at, DIR_TO_CONTAINER, reason, p);
}

/* to_container judges what enters a container through its veth. A frame
 * the bridge forwarded from an endpoint's veth was judged by its sender's
 * from_container (icc and isolation again here: flooded frames reach every
 * port). Anything else was sent into the network by the host stack (made
 * by the host, or routed in from the bridge or another interface) and is
 * judged as it enters, so a network needs no program on its bridge. */
SEC("tc")
int to_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	const __u32 dir = DIR_TO_CONTAINER;
	struct endpoint_info *ep;
	struct ethhdr *eth;
	int rc = veth_frame(skb, dir, &ep, &eth);
	if (rc >= 0)
		return rc;
	switch (eth->h_proto) {
	case ETH_P_ARP_BE:
		return TC_ACT_OK;
	case ETH_P_IPV6_BE: {
		if (has_ip6(ep)) {
			__u32 v = judge6_to_container(skb, ep, skb->ingress_ifindex);
			return v == PASS ? TC_ACT_OK : drop(skb, ifindex, dir, v);
		}
		__u32 v = ipv6_control(skb, 0);
		/* Bridged from another endpoint (the veth it came in on): as
		 * for IPv4, nothing crosses icc or isolation. */
		__u32 in = skb->ingress_ifindex;
		struct endpoint_info *src = in != ifindex ? bpf_map_lookup_elem(&ep_by_ifindex, &in) : 0;
		if (v == PASS && src)
			v = between(src->net_id, ep->net_id);
		return v == PASS ? TC_ACT_OK : drop(skb, ifindex, dir, v);
	}
	case ETH_P_IP_BE:
		break;
	case ETH_P_8021Q_BE:
	case ETH_P_8021AD_BE:
		return drop(skb, ifindex, dir, REASON_MALFORMED);
	default:
		return drop(skb, ifindex, dir, REASON_UNSUPPORTED);
	}
	struct pkt p;
	if (parse_ipv4(skb, &p) < 0)
		return drop(skb, ifindex, dir, REASON_MALFORMED);
	/* Sources were checked at the sender's from_container, so a frame
	 * bridged from an endpoint (or hairpinned back to this one) carries
	 * its address and came in on its veth. Anything else the host stack
	 * sent: made by the host, or routed in. */
	struct ip_endpoint *src = bpf_map_lookup_elem(&ep_by_ip, &p.saddr);
	__u32 in = skb->ingress_ifindex;
	if (!src || src->ifindex != in) {
		__u32 v = judge_to_network(skb, ep->net_id, &p, in);
		if (v != PASS)
			return drop_pkt(skb, ifindex, dir, v, &p);
	}
	if (src && src->ifindex != ifindex) {
		__u32 v = between(src->net_id, ep->net_id);
		if (v != PASS)
			return drop_pkt(skb, ifindex, dir, v, &p);
	}
	return TC_ACT_OK;
}

/* masq_addr is the source the flows of masquerading network n get on
 * uplink ifindex: its host_ipv4, else the uplink's address; -1 if there is
 * none. */
static __always_inline int masq_addr(const struct network_info *n, __u32 ifindex, __be32 *addr)
{
	*addr = n->snat_ip;
	if (*addr)
		return 0;
	struct uplink_info *u = bpf_map_lookup_elem(&uplinks, &ifindex);
	if (!u || !u->addr)
		return -1;
	*addr = u->addr;
	return 0;
}

/* masq_addr6 is masq_addr for IPv6: the uplink's IPv6 address (IPv6 has
 * no host_ipv4 counterpart here). */
static __always_inline int masq_addr6(const struct network_info *n, __u32 ifindex, struct in6_key *addr)
{
	struct uplink_info *u = bpf_map_lookup_elem(&uplinks, &ifindex);
	if (!u || !(u->addr6.a[0] | u->addr6.a[1] | u->addr6.a[2] | u->addr6.a[3]))
		return -1;
	*addr = u->addr6;
	return 0;
}

/* managed reports whether a is in a managed subnet. */
static __always_inline int managed(__be32 a)
{
	return subnet_of(a) != 0;
}

static __always_inline int managed6(struct in6_key a)
{
	return subnet6_of(a.a) != 0;
}

#define FAMILY 4
#include "translate_family.h"
#undef FAMILY
#define FAMILY 6
#include "translate_family.h"
#undef FAMILY

/* uplink_proto returns the Ethernet type of a frame on an uplink, 0 for
 * one too short to have it. */
static __always_inline __be16 uplink_proto(struct __sk_buff *skb)
{
	pull(skb, ETH_HLEN);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return 0;
	return eth->h_proto;
}

static __always_inline int is_loopback(__be32 a)
{
	return (bpf_ntohl(a) >> 24) == 127;
}

/* spoofed_outside reports whether a packet arriving on an uplink claims a
 * source it cannot have: one of the host's addresses, loopback, a managed
 * subnet, or multicast/broadcast. The kernel's martian and reverse-path
 * checks would catch some of these, but only after from_uplink has
 * translated or delivered them. */
static __always_inline int spoofed_outside(__be32 s)
{
	return is_host_addr(s) || is_loopback(s) || is_multi(s) || subnet_of(s);
}

static __always_inline int ip6_loopback(const struct in6_key *a)
{
	return !(a->a[0] | a->a[1] | a->a[2]) && a->a[3] == bpf_htonl(1);
}

static __always_inline int is_host_addr6(const struct in6_key *a)
{
	return bpf_map_lookup_elem(&host_addrs6, a) != 0;
}

/* spoofed_outside6 is spoofed_outside for IPv6: a host address, ::1,
 * multicast or a managed subnet. */
static __always_inline int spoofed_outside6(const struct in6_key *s)
{
	return ip6_loopback(s) || ip6_multicast(s->a) || is_host_addr6(s) || subnet6_of(s->a);
}

/* drop_to_network6 is drop_to_network for IPv6. */
static __always_inline int drop_to_network6(struct __sk_buff *skb, __u32 net_id, const struct pkt6 *p, __u32 reason)
{
	__u32 at = net_id;
	struct ip_endpoint *dst = bpf_map_lookup_elem(&ep_by_ip6, &p->daddr);
	if (dst && dst->net_id == net_id)
		at = dst->ifindex;
	return drop(skb, at, DIR_TO_CONTAINER, reason);
}

/* from_uplink6 is from_uplink for IPv6: replies to translated flows are
 * translated back, connections to published ports translated to their
 * endpoint, and what is for a managed subnet is judged and delivered
 * straight into its container (or left to the host's stack). It and
 * from_uplink4 are global functions: the verifier checks each once, on
 * its own (inlined in one program, the two versions' paths multiplied its
 * work past TestVerifierHeadroom's budget), and the packet lives in
 * pkt6_scratch to keep the stack within 512 bytes. */
__noinline int from_uplink6(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct pkt6 *p = bpf_map_lookup_elem(&pkt6_scratch, &zero);
	if (!skb || !p || parse_ipv6(skb, p) < 0)
		return TC_ACT_UNSPEC;
	__u64 now = clock_ns(); /* read once: the clock costs as much as a lookup */
	if (skb->pkt_type != PACKET_LOOPBACK && spoofed_outside6(&p->saddr)) {
		stat_inc(STAT_UPLINK_SPOOFED);
		__u32 *dnet = subnet6_of(p->daddr.a);
		return dnet ? drop_to_network6(skb, *dnet, p, REASON_SPOOF) : TC_ACT_SHOT;
	}
	enum untranslated ut = untranslate6(skb, p, now);
	if (ut == UT_HOST)
		return TC_ACT_UNSPEC; /* a reply to the host */
	/* A new connection to a published port (never on ::1, as from_uplink
	 * on 127.0.0.0/8); a first fragment has the ports too. */
	if (ut == UT_NONE && p->frag != FRAG_LATER && !ip6_loopback(&p->daddr) && opens_connection6(p) && is_host_addr6(&p->daddr)) {
		struct port_backend6 *b = published6(p->proto, p->daddr, p->dport);
		if (b) {
			__u32 v = dnat_open6(p, b, p->saddr, 0, 0, b->slot, p->saddr);
			if (v != PASS)
				return drop(skb, b->ifindex, DIR_TO_CONTAINER, v);
			if (untranslate6(skb, p, now) == UT_NONE)
				return TC_ACT_SHOT;
		}
	}
	/* Its network: the endpoint's, or the subnet's it falls in. */
	struct ip_endpoint *dst = bpf_map_lookup_elem(&ep_by_ip6, &p->daddr);
	__u32 *dnet = dst ? &dst->net_id : subnet6_of(p->daddr.a);
	if (!dnet)
		return TC_ACT_UNSPEC;
	__u32 net_id = *dnet;
	struct network_info *n = bpf_map_lookup_elem(&networks, &net_id);
	__u32 v = judge_from_outside6(skb, n ? n->flags : 0, p, ut, now);
	if (v != PASS)
		return drop_to_network6(skb, net_id, p, v);
	int rc = fast_in6(skb, p, dst, n);
	if (rc >= 0)
		return rc;
	skb->mark |= forward_mark;
	return TC_ACT_UNSPEC;
}

/* from_uplink4 is from_uplink for IPv4 (a global function: see
 * from_uplink6). */
__noinline int from_uplink4(struct __sk_buff *skb)
{
	struct pkt p;
	if (!skb || parse_ipv4(skb, &p) < 0)
		return TC_ACT_UNSPEC; /* the host's business */
	__u64 now = clock_ns(); /* read once: the clock costs as much as a lookup */
	/* The host's own multicast and broadcast, looped back, come in here
	 * with its own source: the kernel's business. */
	if (skb->pkt_type != PACKET_LOOPBACK && spoofed_outside(p.saddr)) {
		stat_inc(STAT_UPLINK_SPOOFED);
		__u32 *dnet = subnet_of(p.daddr);
		return dnet ? drop_to_network(skb, *dnet, &p, REASON_SPOOF) : TC_ACT_SHOT;
	}
	enum untranslated ut = untranslate(skb, &p, now);
	if (ut == UT_HOST)
		return TC_ACT_UNSPEC; /* a reply to the host */
	/* A new connection to a published port? Never on a loopback address:
	 * a port bound to 127.0.0.1 is for the host's own processes, and the
	 * kernel drops 127.0.0.0/8 arriving on an uplink as martian. A
	 * datagram's first fragment opens it too: its later ones follow it. */
	if (ut == UT_NONE && p.frag != FRAG_LATER && !is_loopback(p.daddr) && opens_connection(&p) && is_host_addr(p.daddr)) {
		struct port_backend *b = published(p.proto, p.daddr, p.dport);
		if (b) {
			__u32 v = dnat_open(&p, b, p.saddr, 0, 0, b->slot, p.saddr);
			if (v != PASS)
				return drop_pkt(skb, b->ifindex, DIR_TO_CONTAINER, v, &p);
			if (untranslate(skb, &p, now) == UT_NONE)
				return TC_ACT_SHOT;
		}
	}
	/* Its network: the endpoint's, or the subnet's it falls in. */
	struct ip_endpoint *dst = bpf_map_lookup_elem(&ep_by_ip, &p.daddr);
	__u32 *dnet = dst ? &dst->net_id : subnet_of(p.daddr);
	if (!dnet)
		return TC_ACT_UNSPEC;
	__u32 net_id = *dnet;
	struct network_info *n = bpf_map_lookup_elem(&networks, &net_id);
	/* Nothing arriving on an uplink comes from the host itself, whatever
	 * its source says: the kernel's martian check has not run yet. */
	__u32 v = judge_from_outside(skb, n ? n->flags : 0, &p, ut, now);
	if (v != PASS)
		return drop_to_network(skb, net_id, &p, v);
	int rc = fast_in(skb, &p, dst, n);
	if (rc >= 0)
		return rc;
	skb->mark |= forward_mark;
	return TC_ACT_UNSPEC;
}

SEC("tc")
int from_uplink(struct __sk_buff *skb)
{
	__be16 proto = uplink_proto(skb);
	if (proto == ETH_P_IP_BE)
		return from_uplink4(skb);
	if (proto == ETH_P_IPV6_BE)
		return from_uplink6(skb);
	return TC_ACT_UNSPEC; /* the host's business */
}

/* to_uplink6 is to_uplink for IPv6: packets of containers on
 * masquerading networks get the uplink's IPv6 address and a free port.
 * The source's network as for IPv4 (to_uplink4). */
static __always_inline int to_uplink6(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct pkt6 *p = bpf_map_lookup_elem(&pkt6_scratch, &zero);
	if (!p || parse_ipv6(skb, p) < 0)
		return TC_ACT_UNSPEC;
	__u32 ifindex = skb->ifindex;
	struct ip_endpoint *src = bpf_map_lookup_elem(&ep_by_ip6, &p->saddr);
	__u32 *snet = src ? &src->net_id : subnet6_of(p->saddr.a);
	if (!snet) {
		struct uplink_info *u = bpf_map_lookup_elem(&uplinks, &ifindex);
		if (u && ip6_eq(u->addr6.a, p->saddr.a))
			nat_host6(p);
		host_error6(skb, p);
		return TC_ACT_UNSPEC;
	}
	__u32 net_id = *snet;
	__u32 at = src ? src->ifindex : net_id; /* a drop counts on the sender */
	struct network_info *n = bpf_map_lookup_elem(&networks, &net_id);
	if (!n)
		return TC_ACT_UNSPEC;
	__u32 v = translate6(skb, p, n, ifindex, n->flags & NET_F_MASQUERADE);
	if (v == PASS)
		return TC_ACT_UNSPEC;
	return drop(skb, at, DIR_FROM_CONTAINER, v);
}

/* to_uplink4 is to_uplink for IPv4. */
static __always_inline int to_uplink4(struct __sk_buff *skb)
{
	struct pkt p;
	if (parse_ipv4(skb, &p) < 0)
		return TC_ACT_UNSPEC;
	__u32 ifindex = skb->ifindex;
	/* Its network: the endpoint's (a hash lookup), or the subnet's it
	 * falls in (the host's own packets from a gateway address are
	 * masqueraded too, as by Docker's -s SUBNET rule). */
	struct ip_endpoint *src = bpf_map_lookup_elem(&ep_by_ip, &p.saddr);
	__u32 *snet = src ? &src->net_id : subnet_of(p.saddr);
	if (!snet) {
		struct uplink_info *u = bpf_map_lookup_elem(&uplinks, &ifindex);
		if (u && u->addr == p.saddr)
			nat_host(&p);
		host_error(skb, &p);
		return TC_ACT_UNSPEC;
	}
	__u32 net_id = *snet;
	__u32 at = src ? src->ifindex : net_id; /* a drop counts on the sender */
	struct network_info *n = bpf_map_lookup_elem(&networks, &net_id);
	if (!n)
		return TC_ACT_UNSPEC;
	__u32 v = translate(skb, &p, n, ifindex, n->flags & NET_F_MASQUERADE);
	if (v == PASS)
		return TC_ACT_UNSPEC;
	return drop_pkt(skb, at, DIR_FROM_CONTAINER, v, &p);
}

SEC("tc")
int to_uplink(struct __sk_buff *skb)
{
	__be16 proto = uplink_proto(skb);
	if (proto == ETH_P_IP_BE)
		return to_uplink4(skb);
	if (proto == ETH_P_IPV6_BE)
		return to_uplink6(skb);
	return TC_ACT_UNSPEC;
}

/*
 * Host sockets and published ports. Attached to a cgroup (v2), these
 * rewrite the destination of the host's own connections and datagrams to
 * a published port (on 127.0.0.1 or another host address) to the endpoint
 * behind it before the kernel routes them, the way Cilium's socket
 * load-balancing does, and make recvmsg and getpeername show the address
 * the socket asked for. Only sockets of the daemon's network namespace
 * are touched.
 */
volatile const __u64 host_netns_cookie = 0;

static __always_inline int is_local_addr(__be32 a)
{
	return is_loopback(a) || is_host_addr(a);
}

static __always_inline int sock_dnat(struct bpf_sock_addr *ctx)
{
	if (!host_netns_cookie || bpf_get_netns_cookie(ctx) != host_netns_cookie)
		return 1;
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	if (!is_local_addr(addr))
		return 1;
	struct port_backend *b = published(ctx->protocol, addr, port);
	if (!b)
		return 1;
	struct sock_key k = {.cookie = bpf_get_socket_cookie(ctx), .addr = b->addr, .port = b->port};
	struct sock_orig o = {.addr = addr, .port = port};
	bpf_map_update_elem(&sock_rev, &k, &o, BPF_ANY);
	ctx->user_ip4 = b->addr;
	ctx->user_port = b->port;
	stat_inc(STAT_SOCK_DNAT);
	return 1;
}

static __always_inline int sock_undnat(struct bpf_sock_addr *ctx)
{
	if (!host_netns_cookie || bpf_get_netns_cookie(ctx) != host_netns_cookie)
		return 1;
	struct sock_key k = {.cookie = bpf_get_socket_cookie(ctx), .addr = ctx->user_ip4, .port = (__be16)ctx->user_port};
	struct sock_orig *o = bpf_map_lookup_elem(&sock_rev, &k);
	if (o) {
		ctx->user_ip4 = o->addr;
		ctx->user_port = o->port;
	}
	return 1;
}

/* sock_dnat6 and sock_undnat6 are sock_dnat and sock_undnat for IPv6
 * sockets. As for IPv4, [::1] reaches a port published on every address:
 * the socket is sent to the container before anything is routed, so the
 * lack of route_localnet in IPv6 does not matter here. */
static __always_inline int sock_dnat6(struct bpf_sock_addr *ctx)
{
	if (!host_netns_cookie || bpf_get_netns_cookie(ctx) != host_netns_cookie)
		return 1;
	struct in6_key addr = {.a = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]}};
	__be16 port = (__be16)ctx->user_port;
	if (!ip6_loopback(&addr) && !is_host_addr6(&addr))
		return 1;
	struct port_backend6 *b = published6(ctx->protocol, addr, port);
	if (!b)
		return 1;
	struct sock_key6 k = {.cookie = bpf_get_socket_cookie(ctx), .addr = b->addr, .port = b->port};
	struct sock_orig6 o = {.addr = addr, .port = port};
	bpf_map_update_elem(&sock_rev6, &k, &o, BPF_ANY);
	ctx->user_ip6[0] = b->addr.a[0];
	ctx->user_ip6[1] = b->addr.a[1];
	ctx->user_ip6[2] = b->addr.a[2];
	ctx->user_ip6[3] = b->addr.a[3];
	ctx->user_port = b->port;
	stat_inc(STAT_SOCK_DNAT);
	return 1;
}

static __always_inline int sock_undnat6(struct bpf_sock_addr *ctx)
{
	if (!host_netns_cookie || bpf_get_netns_cookie(ctx) != host_netns_cookie)
		return 1;
	struct sock_key6 k = {.cookie = bpf_get_socket_cookie(ctx), .port = (__be16)ctx->user_port,
			      .addr = {.a = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]}}};
	struct sock_orig6 *o = bpf_map_lookup_elem(&sock_rev6, &k);
	if (o) {
		ctx->user_ip6[0] = o->addr.a[0];
		ctx->user_ip6[1] = o->addr.a[1];
		ctx->user_ip6[2] = o->addr.a[2];
		ctx->user_ip6[3] = o->addr.a[3];
		ctx->user_port = o->port;
	}
	return 1;
}

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock_dnat6(ctx);
}

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_dnat6(ctx);
}

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock_undnat6(ctx);
}

SEC("cgroup/getpeername6")
int sock_peername6(struct bpf_sock_addr *ctx)
{
	return sock_undnat6(ctx);
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_dnat(ctx);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_dnat(ctx);
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_undnat(ctx);
}

SEC("cgroup/getpeername4")
int sock_peername4(struct bpf_sock_addr *ctx)
{
	return sock_undnat(ctx);
}

char __license[] SEC("license") = "Dual BSD/GPL";
