/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Source translation (masquerade and host_ipv4 SNAT) for traffic leaving
 * through an uplink, and its reverse for the replies. A translation is a
 * pair of entries: nat_fwd, keyed by the container's tuple, and nat_rev,
 * keyed by the reply's tuple on the wire. Ports (ICMP echo identifiers)
 * are allocated by inserting nat_rev with BPF_NOEXIST, which makes a
 * collision impossible. The host's own flows from a masquerade address are
 * recorded in nat_rev too (NAT_F_HOST), so containers never get a port the
 * host is using with the same peer.
 */
#ifndef BPFNET_NAT_H
#define BPFNET_NAT_H

#include <stddef.h>
#include "maps.h"
#include "parse.h"
#include "conntrack.h"
#include "counters.h"

/* Ports translated TCP and UDP flows may use (ICMP echo identifiers may
 * be any value). */
volatile const __u16 nat_port_min = 1024;
volatile const __u16 nat_port_max = 65535;

#define NAT_RETRIES 32

#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SRC_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))

/* l4_csum_off is the offset of the L4 checksum, or 0 if there is none to
 * fix. */
static __always_inline __u32 l4_csum_off(__u8 proto, __u32 l4_off)
{
	switch (proto) {
	case IPPROTO_TCP:
		return l4_off + 16;
	case IPPROTO_UDP:
		return l4_off + 6;
	case IPPROTO_ICMP:
		return l4_off + 2;
	}
	return 0;
}

/* The port field of a side: TCP/UDP source or destination port; for ICMP
 * echo the identifier, whichever side. */
static __always_inline __u32 port_off(__u8 proto, __u32 l4_off, int dst)
{
	if (proto == IPPROTO_ICMP)
		return l4_off + 4;
	return l4_off + (dst ? 2 : 0);
}

/* rewrite changes the source (dst=0) or destination (dst=1) address and
 * port of the packet, fixing the IP and L4 checksums incrementally. */
static __always_inline int rewrite(struct __sk_buff *skb, const struct pkt *p, int dst, __be32 addr, __be16 port)
{
	__be32 old_addr = dst ? p->daddr : p->saddr;
	/* An ICMP echo has one "port", the identifier, whichever side. */
	__be16 old_port = (dst && p->proto != IPPROTO_ICMP) ? p->dport : p->sport;
	__u32 csum = p->frag == FRAG_LATER ? 0 : l4_csum_off(p->proto, p->l4_off);
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (csum && p->proto != IPPROTO_ICMP) {
		if (bpf_l4_csum_replace(skb, csum, old_addr, addr, BPF_F_PSEUDO_HDR | mangled | 4) < 0)
			return -1;
	}
	if (csum && port != old_port) {
		if (bpf_l4_csum_replace(skb, csum, old_port, port, mangled | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off(p->proto, p->l4_off, dst), &port, 2, 0) < 0)
			return -1;
	}
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, addr, 4) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, dst ? IP_DST_OFF : IP_SRC_OFF, &addr, 4, 0);
}

/* csum_replace returns a 16-bit one's complement checksum after a 4-byte
 * field changed from `from` to `to` (RFC 1624). */
static __always_inline __sum16 csum_replace(__sum16 check, __be32 from, __be32 to)
{
	__s64 d = bpf_csum_diff(&from, 4, &to, 4, (__u16)~check);
	__u32 s = (__u32)d;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__sum16)~s;
}

/* rewrite_icmp_error translates an ICMP error about a translated flow: the
 * outer address (dst=1: destination, for errors coming in; dst=0: source,
 * for errors going out) becomes outer_addr, and the quoted packet's other
 * side (its source for errors coming in, its destination for errors going
 * out) becomes addr:port. The quoted IP checksum, the quoted UDP checksum
 * and the ICMP checksum are fixed. */
static __always_inline int rewrite_icmp_error(struct __sk_buff *skb, const struct pkt *p, int dst, __be32 outer_addr,
					      __be32 addr, __be16 port)
{
	__u32 icmp_csum = p->l4_off + 2;
	__u32 in_addr_off = p->inner_off + (dst ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
	__u32 in_csum_off = p->inner_off + offsetof(struct iphdr, check);
	__be32 old_addr = dst ? p->inner_saddr : p->inner_daddr;
	__be16 old_port = dst ? p->inner_sport : p->inner_dport;
	__u32 in_port_off = port_off(p->inner_proto, p->inner_l4_off, !dst);
	__sum16 old_ipsum, new_ipsum;

	if (bpf_skb_load_bytes(skb, in_csum_off, &old_ipsum, 2) < 0)
		return -1;
	new_ipsum = csum_replace(old_ipsum, old_addr, addr);
	/* The quoted UDP checksum covers the address (pseudo header) and the
	 * port; 0 means none. TCP's is not among the quoted 8 bytes. */
	if (p->inner_proto == IPPROTO_UDP) {
		__sum16 old_udp, new_udp;
		__u32 off = p->inner_l4_off + 6;
		if (bpf_skb_load_bytes(skb, off, &old_udp, 2) < 0)
			return -1;
		if (old_udp) {
			new_udp = csum_replace(old_udp, old_addr, addr);
			new_udp = csum_replace(new_udp, old_port, port);
			if (!new_udp)
				new_udp = 0xffff;
			if (bpf_l4_csum_replace(skb, icmp_csum, old_udp, new_udp, 2) < 0 ||
			    bpf_skb_store_bytes(skb, off, &new_udp, 2, 0) < 0)
				return -1;
		}
	}
	if (bpf_l4_csum_replace(skb, icmp_csum, old_addr, addr, 4) < 0 ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_ipsum, new_ipsum, 2) < 0 ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_port, port, 2) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, in_addr_off, &addr, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, in_csum_off, &new_ipsum, 2, 0) < 0 ||
	    bpf_skb_store_bytes(skb, in_port_off, &port, 2, 0) < 0)
		return -1;
	__be32 outer_old = dst ? p->daddr : p->saddr;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, outer_old, outer_addr, 4) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, dst ? IP_DST_OFF : IP_SRC_OFF, &outer_addr, 4, 0);
}

/* reply_of is the tuple of the replies to a flow sent as k. */
static __always_inline struct tuple reply_of(const struct tuple *k)
{
	struct tuple r = {.saddr = k->daddr, .daddr = k->saddr, .proto = k->proto};
	if (k->proto == IPPROTO_ICMP) {
		r.sport = k->sport; /* the echo identifier */
	} else {
		r.sport = k->dport;
		r.dport = k->sport;
	}
	return r;
}

static __always_inline int nat_live(const struct tuple *k, struct nat_entry *e, __u64 now)
{
	return !expired(now, e->last_seen, ct_timeout(k, e->flags & 0xffff));
}

/* nat_touch refreshes a translation seen in either direction. */
static __always_inline void nat_touch(struct nat_entry *e, const struct pkt *p, __u32 extra, __u64 now)
{
	e->last_seen = now;
	e->flags |= tcp_close_flags(p) | extra;
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & TCP_FLAG_SYN) && !(p->tcp_flags & TCP_FLAG_ACK))
		e->flags &= ~(CT_F_FIN | CT_F_RST);
}

/* nat_host records a flow the host itself sends from a masquerade
 * address, so that its port is never handed to a container. */
static __always_inline void nat_host(const struct pkt *p)
{
	if (p->frag == FRAG_LATER || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP &&
				      !(p->proto == IPPROTO_ICMP && p->icmp_type == ICMP_ECHO)))
		return;
	struct tuple k = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	struct tuple r = reply_of(&k);
	__u64 now = bpf_ktime_get_ns();
	struct nat_entry *e = bpf_map_lookup_elem(&nat_rev, &r);
	if (e) {
		if (e->flags & NAT_F_HOST)
			nat_touch(e, p, 0, now);
		return; /* a container's translation holds it: keep it */
	}
	struct nat_entry n = {.addr = p->saddr, .port = p->sport, .created = now, .last_seen = now,
			      .flags = NAT_F_HOST | tcp_close_flags(p)};
	bpf_map_update_elem(&nat_rev, &r, &n, BPF_NOEXIST);
}

/* nat_alloc finds a free port for the container's flow k translated to
 * addr and records both entries. The original port is kept when it is in
 * the range and free. Returns the port (network order) or 0. */
static __always_inline __be16 nat_alloc(const struct tuple *k, __be32 addr, __u32 ifindex, const struct pkt *p)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 lo = nat_port_min, hi = nat_port_max;
	if (k->proto == IPPROTO_ICMP) {
		lo = 0; /* echo identifiers: any value */
		hi = 65535;
	}
	if (hi < lo)
		return 0;
	__u32 span = hi - lo + 1;
	__u32 orig = bpf_ntohs(k->sport);
	__u32 start = (orig >= lo && orig <= hi) ? orig - lo : bpf_get_prandom_u32() % span;

	struct tuple t = *k;
	t.saddr = addr;
	struct nat_entry rev = {.addr = k->saddr, .port = k->sport, .created = now, .last_seen = now,
				.flags = tcp_close_flags(p), .ifindex = ifindex};
	for (int i = 0; i < NAT_RETRIES; i++) {
		__u32 port = lo + (start + i) % span;
		t.sport = bpf_htons(port);
		struct tuple r = reply_of(&t);
		struct nat_entry *old = bpf_map_lookup_elem(&nat_rev, &r);
		if (old) {
			if (nat_live(&r, old, now))
				continue;
			bpf_map_delete_elem(&nat_rev, &r);
			stat_inc(STAT_NAT_EXPIRED);
		}
		if (bpf_map_update_elem(&nat_rev, &r, &rev, BPF_NOEXIST) < 0)
			continue;
		struct nat_entry fwd = {.addr = addr, .port = t.sport, .created = now, .last_seen = now,
					.flags = rev.flags};
		if (bpf_map_update_elem(&nat_fwd, k, &fwd, BPF_ANY) < 0) {
			bpf_map_delete_elem(&nat_rev, &r);
			return 0;
		}
		stat_inc(STAT_NAT_CREATED);
		return t.sport;
	}
	stat_inc(STAT_NAT_EXHAUSTED);
	return 0;
}

#endif
