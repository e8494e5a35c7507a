/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Fast paths that deliver a packet the policy allowed without the host's
 * bridge, netfilter and routing: into another container on the host
 * (bpf_redirect_peer), out of an uplink (bpf_fib_lookup, then bpf_redirect
 * or bpf_redirect_neigh), and from an uplink into a container
 * (bpf_redirect_peer). Each returns -1 when the packet must take the
 * normal path (fragments, TTL about to expire, MTU, a route that does not
 * leave through an uplink), which enforces and translates the same way.
 */
#ifndef BPFNET_FASTPATH_H
#define BPFNET_FASTPATH_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include "maps.h"
#include "parse.h"
#include "nat.h"
#include "counters.h"

#define AF_INET 2


/* dec_ttl decrements the TTL as a router does; returns -1 when the packet
 * would expire (the stack then sends the ICMP error). Written directly,
 * with the header checksum (packet_at: parse_ipv4 found the header in
 * the linear part). */
static __always_inline int dec_ttl(struct __sk_buff *skb, const struct pkt *p)
{
	if (p->ttl <= 1)
		return -1;
	struct iphdr *ip = packet_at(skb, ETH_HLEN, sizeof(*ip));
	if (!ip)
		return -1;
	__be16 old = bpf_htons((__u16)p->ttl << 8 | p->proto);
	__be16 new = bpf_htons((__u16)(p->ttl - 1) << 8 | p->proto);
	ip->check = csum_replace2(ip->check, old, new);
	ip->ttl = p->ttl - 1;
	return 0;
}

/* dec_ttl6 decrements the hop limit (IPv6 has no header checksum). */
static __always_inline int dec_ttl6(struct __sk_buff *skb, const struct pkt6 *p)
{
	if (p->hop_limit <= 1)
		return -1;
	__u8 hop = p->hop_limit - 1;
	return store(skb, ETH_HLEN + offsetof(struct ipv6hdr, hop_limit), &hop, 1);
}

static __always_inline int set_macs(struct __sk_buff *skb, const __u8 *dst, const __u8 *src)
{
	if (store(skb, 0, dst, ETH_ALEN) < 0)
		return -1;
	return store(skb, ETH_ALEN, src, ETH_ALEN);
}

/* fast_local delivers a packet from one endpoint to another of the same
 * network (dst, its ep_by_ip entry) straight into the receiver's
 * namespace, as the bridge would have (the frame is unchanged: it already
 * carries the receiver's MAC). The receiver's to_container counts are
 * updated here. */
static __always_inline int fast_local(struct __sk_buff *skb, __u32 from_ifindex, const struct ip_endpoint *dst)
{
	__u32 to = dst->ifindex;
	if (to == from_ifindex)
		return -1;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	if (*(__u32 *)eth->h_dest != *(__u32 *)dst->mac || *(__u16 *)(eth->h_dest + 4) != *(__u16 *)(dst->mac + 4))
		return -1; /* not addressed to it at L2 (yet): the bridge decides */
	count(dst->slot, DIR_TO_CONTAINER, skb);
	stat_inc(STAT_FAST_LOCAL);
	return bpf_redirect_peer(to, 0);
}

/* nd_local delivers a neighbour solicitation or advertisement straight
 * into the endpoint it is for (nd6_peer), whatever its Ethernet
 * destination (a solicitation's is multicast): the redirect makes it the
 * receiver's own (PACKET_HOST). -1 for the sender's own address (duplicate
 * address detection: the bridge floods it). */
static __always_inline int nd_local(struct __sk_buff *skb, __u32 from_ifindex, const struct ip_endpoint *dst)
{
	__u32 to = dst->ifindex;
	if (to == from_ifindex)
		return -1;
	count(dst->slot, DIR_TO_CONTAINER, skb);
	stat_inc(STAT_FAST_LOCAL);
	return bpf_redirect_peer(to, 0);
}

#define AF_INET6 10

/* fast_out and fast_in, per IP version (fastpath_family.h). */
#define FAMILY 4
#include "fastpath_family.h"
#undef FAMILY
#define FAMILY 6
#include "fastpath_family.h"
#undef FAMILY

#endif
