/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-endpoint counters: packets and bytes per direction and family
 * (traffic), drops by reason (drops). */
#ifndef BPFNET_COUNTERS_H
#define BPFNET_COUNTERS_H

#include <linux/pkt_cls.h>
#include "maps.h"
#include "parse.h"

/* Drop events each CPU may send per second (0: none). */
volatile const __u32 events_per_sec = 1000;

#define PASS 0xff /* verdict: no drop reason */

static __always_inline void stat_inc(__u32 s)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &s);
	if (v)
		*v += 1;
}

/* describe fills in what a drop event says of a packet the program did
 * not parse (or parsed as IPv4: p), reading its headers again. */
static __noinline void describe(struct __sk_buff *skb, struct drop_event *e, const struct pkt *p)
{
	__be16 type = 0;
	bpf_skb_load_bytes(skb, 12, &type, sizeof(type));
	e->ethertype = type;
	if (p) {
		e->proto = p->proto;
		e->icmp_type = p->proto == IPPROTO_ICMP ? p->icmp_type : 0;
		e->saddr = p->saddr;
		e->daddr = p->daddr;
		e->sport = p->sport;
		e->dport = p->dport;
		return;
	}
	/* Loaded straight into the record: next to nothing on the stack,
	 * which the programs that drop have mostly used. */
	if (type == bpf_htons(ETH_P_IP)) {
		bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &e->proto, 1);
		bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &e->saddr, 8); /* saddr, daddr */
	} else if (type == bpf_htons(ETH_P_ARP)) {
		/* Ethernet/IPv4 ARP: sender address at 14, target at 24. */
		bpf_skb_load_bytes(skb, ETH_HLEN + 14, &e->saddr, 4);
		bpf_skb_load_bytes(skb, ETH_HLEN + 24, &e->daddr, 4);
	} else if (type == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr), &e->proto, 1) < 0)
			return;
		bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), e->saddr6, 32); /* saddr6, daddr6 */
		__u32 l4 = ETH_HLEN + sizeof(struct ipv6hdr);
		if (e->proto == IPPROTO_HOPOPTS) {
			/* Every interface that comes up sends MLD reports, behind a
			 * hop-by-hop header (router alert): the most common IPv6
			 * drop is named by what that header holds. */
			__u8 h[2]; /* next header, length in 8 bytes beyond the first 8 */
			if (bpf_skb_load_bytes(skb, l4, h, sizeof(h)) < 0)
				return;
			e->proto = h[0];
			l4 += (h[1] + 1) * 8;
		}
		if (e->proto == IPPROTO_TCP || e->proto == IPPROTO_UDP)
			bpf_skb_load_bytes(skb, l4, &e->sport, 4); /* sport, dport */
		else if (e->proto == IPPROTO_ICMPV6)
			bpf_skb_load_bytes(skb, l4, &e->icmp_type, 1);
	}
}

/* emit sends a drop event, within this CPU's budget. */
static __always_inline void emit(struct __sk_buff *skb, __u32 ifindex, __u32 dir, __u32 reason, const struct pkt *p)
{
	if (!events_per_sec)
		return;
	__u32 zero = 0;
	struct event_budget *b = bpf_map_lookup_elem(&ev_budget, &zero);
	if (!b)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u64 second = now / 1000000000ULL;
	if (b->second != second) {
		b->second = second;
		b->used = 0;
	}
	if (b->used >= events_per_sec) {
		stat_inc(STAT_EVENTS_SUPPRESSED);
		return;
	}
	b->used++;
	struct drop_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		stat_inc(STAT_EVENTS_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = now;
	e->ifindex = ifindex;
	e->dir = dir;
	e->reason = reason;
	e->len = skb->len;
	describe(skb, e, p);
	bpf_ringbuf_submit(e, 0);
}

/* frame_family is the enum family a frame is counted under. */
static __always_inline __u32 frame_family(const struct __sk_buff *skb)
{
	return skb->protocol == bpf_htons(ETH_P_IPV6) ? FAMILY_IPV6 : FAMILY_IPV4;
}

/* traffic_index is the traffic entry of an endpoint's slot, direction and
 * family. */
static __always_inline __u32 traffic_index(__u32 slot, __u32 dir, __u32 family)
{
	return (slot * 2 + dir) * FAMILY_MAX + family;
}

/* count counts a frame of the endpoint with counter slot `slot`. */
static __always_inline void count(__u32 slot, __u32 dir, const struct __sk_buff *skb)
{
	__u32 k = traffic_index(slot, dir, frame_family(skb));
	struct traffic_counts *t = bpf_map_lookup_elem(&traffic, &k);
	if (t) {
		t->packets++;
		t->bytes += skb->len;
	}
}

/* zero_drops is a new drops entry's value (global data: too large for
 * the stack of the programs that drop). Never written. */
static struct drop_counts zero_drops;

/* drop_pkt counts a drop (and sends its event) and returns TC_ACT_SHOT;
 * p, when not NULL, is the parsed packet. */
static __always_inline int drop_pkt(struct __sk_buff *skb, __u32 ifindex, __u32 dir, __u32 reason, const struct pkt *p)
{
	struct drop_key k = {.ifindex = ifindex, .dir = dir, .family = frame_family(skb)};
	struct drop_counts *c = bpf_map_lookup_elem(&drops, &k);
	if (!c) {
		bpf_map_update_elem(&drops, &k, &zero_drops, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&drops, &k);
	}
	if (c && reason < REASON_MAX) {
		c->packets[reason]++;
		c->bytes[reason] += skb->len;
	}
	emit(skb, ifindex, dir, reason, p);
	return TC_ACT_SHOT;
}

static __always_inline int drop(struct __sk_buff *skb, __u32 ifindex, __u32 dir, __u32 reason)
{
	return drop_pkt(skb, ifindex, dir, reason, 0);
}

/* drop_pkt6 is drop_pkt for IPv6: the event is read from the frame. */
static __always_inline int drop_pkt6(struct __sk_buff *skb, __u32 ifindex, __u32 dir, __u32 reason, const void *p)
{
	return drop(skb, ifindex, dir, reason);
}

#endif
