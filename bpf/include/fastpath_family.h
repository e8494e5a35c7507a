/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The fast paths out of and into containers (fastpath.h) for one IP
 * version (family.h): fastpath.h includes it for IPv4 and IPv6. No
 * include guard.
 */
#include "family.h"

/* fast_out sends a packet from a container of network net_id to the
 * outside straight out of the uplink the route points at; the uplink's
 * to_uplink program then translates it. IPv6's is a BPF function of its
 * own: its lookup's 64 bytes would take from_container over BPF's stack
 * limit with hairpin6. */
#if FAMILY == 4
static __always_inline
#else
static __noinline
#endif
int F(fast_out)(struct __sk_buff *skb, __u32 net_id, const PKT *p)
{
	if (p->frag != FRAG_NONE)
		return -1;
	struct bpf_fib_lookup fib = {
		.l4_protocol = p->proto,
		.ifindex = net_id, /* routed traffic comes in on the bridge */
	};
#if FAMILY == 4
	fib.family = AF_INET;
	fib.tos = p->tos;
	fib.ipv4_src = p->saddr;
	fib.ipv4_dst = p->daddr;
#else
	fib.family = AF_INET6;
	__builtin_memcpy(fib.ipv6_src, &p->saddr, 16);
	__builtin_memcpy(fib.ipv6_dst, &p->daddr, 16);
#endif
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
		fib.sport = p->sport;
		fib.dport = p->dport;
	}
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;
	__u32 out = fib.ifindex;
	if (!bpf_map_lookup_elem(&uplinks, &out))
		return -1;
	__u32 mtu = 0;
	if (bpf_check_mtu(skb, out, &mtu, 0, 0) != BPF_MTU_CHK_RET_SUCCESS)
		return -1;
	if (F(dec_ttl)(skb, p) < 0)
		return -1;
	stat_inc(STAT_FAST_OUT);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(out, 0, 0, 0);
	if (set_macs(skb, fib.dmac, fib.smac) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(out, 0);
}

/* fast_in delivers a packet from an uplink (already translated back) to
 * its container dst (its EP_MAP entry; NULL: none) of network n: MACs as
 * the bridge would set them, TTL (hop limit) as a router, the receiver's
 * to_container counts, and straight into its namespace. */
static __always_inline int F(fast_in)(struct __sk_buff *skb, const PKT *p, const struct ip_endpoint *dst,
				      const struct network_info *n)
{
	if (p->frag != FRAG_NONE || !dst || !n)
		return -1;
	__u32 to = dst->ifindex;
	if (F(dec_ttl)(skb, p) < 0)
		return -1;
	if (set_macs(skb, dst->mac, n->mac) < 0)
		return TC_ACT_SHOT;
	count(dst->slot, DIR_TO_CONTAINER, skb);
	stat_inc(STAT_FAST_IN);
	return bpf_redirect_peer(to, 0);
}
