/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Source translation (masquerade and host_ipv4 SNAT) for traffic leaving
 * through an uplink, and its reverse for the replies. A translation is a
 * pair of entries: nat_fwd, keyed by the container's tuple, and nat_rev,
 * keyed by the reply's tuple on the wire. Pairs are created, refreshed and
 * removed together, and either half can restore the other, so no
 * interleaving of CPUs and the collector leaves a flow half-translated:
 *
 * - Ports (ICMP echo identifiers) are allocated by inserting nat_rev with
 *   BPF_NOEXIST, which makes a collision impossible, then nat_fwd with
 *   BPF_NOEXIST: of two CPUs translating one flow's first packets, the
 *   second gives its port back and uses the first's.
 * - A forward half whose reply half went missing re-creates it; a reply
 *   half left alone is taken back by its own flow's next allocation.
 * - Containers never get a port of the host's ephemeral range
 *   (nat_skip_min-max), nor a port published on the address; the host's
 *   own flows on other ports are recorded (NAT_F_HOST), and when one meets
 *   a container's translation of the same tuple, the host's flow wins.
 * - Protocols without ports (GRE, ESP, SCTP, ...) are translated by
 *   address only: one flow per remote and protocol, as netfilter's generic
 *   tracker does.
 */
#ifndef BPFNET_NAT_H
#define BPFNET_NAT_H

#include <stddef.h>
#include "maps.h"
#include "parse.h"
#include "conntrack.h"
#include "counters.h"
#include "flows.h"

/* What untranslate did with a packet arriving on an uplink. */
enum untranslated {
	UT_NONE = -1, /* it belongs to no translation */
	UT_BACK = 0,  /* translated back */
	UT_HOST = 1,  /* a flow of the host's: left alone */
	/* translated back, a reply of a flow whose connection-table entry is
	 * known live and replied to this second (nothing closing): the
	 * verdict needs no lookup */
	UT_TRACKED = 2,
};

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

/* csum_replace2 returns a 16-bit one's complement checksum after a 2-byte
 * field changed from `from` to `to` (RFC 1624 eqn. 3), computed here
 * rather than by a helper call. */
static __always_inline __sum16 csum_replace2(__sum16 check, __be16 from, __be16 to)
{
	__u32 s = (__u16)~check + (__u16)~from + (__u16)to;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__sum16)~s;
}

/* csum_replace is csum_replace2 for a 4-byte field: one 16-bit half at a
 * time. */
static __always_inline __sum16 csum_replace(__sum16 check, __be32 from, __be32 to)
{
	return csum_replace2(csum_replace2(check, (__u16)from, (__u16)to), (__u16)(from >> 16), (__u16)(to >> 16));
}

/* packet_at returns n bytes at off in the packet for a direct write, or
 * NULL past the end of its linear part. A store this way costs no helper call
 * (bpf_skb_store_bytes); the program's prologue, which the verifier adds
 * to programs that write packets, made the packet writable. Pointers from
 * before a helper that may move the packet (bpf_l4_csum_replace) are
 * stale: ask again after it. */
static __always_inline void *packet_at(struct __sk_buff *skb, __u32 off, __u32 n)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (off > 0x1ff)
		return 0;
	void *at = data + off;
	if (at + n > end)
		return 0;
	return at;
}

/* store writes n bytes at off: directly where the packet's linear part
 * holds them (packet_at), through bpf_skb_store_bytes where it does not. */
static __always_inline int store(struct __sk_buff *skb, __u32 off, const void *from, __u32 n)
{
	void *at = packet_at(skb, off, n);
	if (!at)
		return bpf_skb_store_bytes(skb, off, from, n, 0);
	__builtin_memcpy(at, from, n);
	return 0;
}

/* rewrite changes the source (dst=0) or destination (dst=1) address and
 * port of the packet, fixing the IP and L4 checksums incrementally. The L4
 * checksum goes through bpf_l4_csum_replace, which also keeps skb->csum
 * right (CHECKSUM_COMPLETE) and leaves a CHECKSUM_PARTIAL packet's
 * port alone; the rest is written directly. */
static __always_inline int rewrite(struct __sk_buff *skb, const struct pkt *p, int dst, __be32 addr, __be16 port)
{
	__be32 old_addr = dst ? p->daddr : p->saddr;
	/* An ICMP echo has one "port", the identifier, whichever side. */
	__be16 old_port = (dst && p->proto != IPPROTO_ICMP) ? p->dport : p->sport;
	__u32 csum = p->frag == FRAG_LATER ? 0 : l4_csum_off(p->proto, p->l4_off);
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	int new_port = csum && port != old_port;

	if (csum && p->proto != IPPROTO_ICMP) {
		if (bpf_l4_csum_replace(skb, csum, old_addr, addr, BPF_F_PSEUDO_HDR | mangled | 4) < 0)
			return -1;
	}
	if (new_port && bpf_l4_csum_replace(skb, csum, old_port, port, mangled | 2) < 0)
		return -1;
	if (new_port && store(skb, port_off(p->proto, p->l4_off, dst), &port, 2) < 0)
		return -1;
	/* parse_ipv4 found the header in the linear part. */
	struct iphdr *ip = packet_at(skb, ETH_HLEN, sizeof(*ip));
	if (!ip)
		return -1;
	ip->check = csum_replace(ip->check, old_addr, addr);
	if (dst)
		ip->daddr = addr;
	else
		ip->saddr = addr;
	return 0;
}


/* rewrite_icmp_error translates an ICMP error about a translated flow: the
 * outer address (dst=1: destination, for errors coming in; dst=0: source,
 * for errors going out) becomes outer_addr, and the quoted packet's other
 * side (its source for errors coming in, its destination for errors going
 * out) becomes addr:port. The quoted IP checksum, the quoted UDP or ICMP
 * echo checksum and the ICMP checksum are fixed. */
static __always_inline int rewrite_icmp_error(struct __sk_buff *skb, const struct pkt *p, int dst, __be32 outer_addr,
					      __be32 addr, __be16 port)
{
	__u32 icmp_csum = p->l4_off + 2;
	__u32 in_addr_off = p->inner_off + (dst ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
	__u32 in_csum_off = p->inner_off + offsetof(struct iphdr, check);
	__be32 old_addr = dst ? p->inner_saddr : p->inner_daddr;
	/* A quoted echo has one "port", its identifier, whichever side. */
	__be16 old_port = (dst || p->inner_proto == IPPROTO_ICMP) ? p->inner_sport : p->inner_dport;
	__u32 in_port_off = port_off(p->inner_proto, p->inner_l4_off, !dst);
	__sum16 old_ipsum, new_ipsum;

	if (bpf_skb_load_bytes(skb, in_csum_off, &old_ipsum, 2) < 0)
		return -1;
	new_ipsum = csum_replace(old_ipsum, old_addr, addr);
	/* The quoted UDP checksum covers the address (pseudo header) and the
	 * port, 0 meaning none; the quoted echo's covers its identifier; TCP's
	 * is not among the quoted 8 bytes. */
	if (p->inner_proto == IPPROTO_UDP || p->inner_proto == IPPROTO_ICMP) {
		__sum16 old_l4, new_l4;
		__u32 off = p->inner_l4_off + (p->inner_proto == IPPROTO_UDP ? 6 : 2);
		if (bpf_skb_load_bytes(skb, off, &old_l4, 2) < 0)
			return -1;
		if (p->inner_proto == IPPROTO_ICMP) {
			new_l4 = csum_replace2(old_l4, old_port, port);
		} else if (old_l4) {
			new_l4 = csum_replace(old_l4, old_addr, addr);
			new_l4 = csum_replace2(new_l4, old_port, port);
			if (!new_l4)
				new_l4 = 0xffff;
		} else {
			new_l4 = 0;
		}
		if (new_l4 != old_l4 && (bpf_l4_csum_replace(skb, icmp_csum, old_l4, new_l4, 2) < 0 ||
					 bpf_skb_store_bytes(skb, off, &new_l4, 2, 0) < 0))
			return -1;
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

/* Ports translated TCP and UDP flows may use (ICMP echo identifiers may
 * be any value), less the host's ephemeral range (ip_local_port_range,
 * which the daemon sets here; 0-0 when it leaves none out). */
volatile const __u16 nat_port_min = 1024;
volatile const __u16 nat_port_max = 65535;
volatile const __u16 nat_skip_min = 0;
volatile const __u16 nat_skip_max = 0;

/* Ports one allocation tries, linearly from the container's own port (or a
 * random one): it fails only when that many in a row are taken for the
 * same destination, i.e. near exhaustion. Each try is a bpf_loop step, so
 * the verifier checks one. */
#define NAT_PROBES 4096

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
}

/* published returns the endpoint behind host address addr and port, for
 * a port bound to that address or to every address. */
static __always_inline struct port_backend *published(__u8 proto, __be32 addr, __be16 port)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	struct port_key k = {.addr = addr, .port = port, .proto = proto};
	struct port_backend *b = bpf_map_lookup_elem(&ports, &k);
	if (b)
		return b;
	k.addr = 0;
	return bpf_map_lookup_elem(&ports, &k);
}

/* A port set: [lo, hi] less [skip_lo, skip_hi] (none when skip_lo >
 * skip_hi), span ports in all. */
struct port_set {
	__u32 lo, hi, skip_lo, skip_hi, span;
};

static __always_inline struct port_set nat_ports(__u8 proto)
{
	struct port_set s = {.lo = nat_port_min, .hi = nat_port_max, .skip_lo = nat_skip_min, .skip_hi = nat_skip_max};
	if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		s.lo = 0; /* echo identifiers: any value */
		s.hi = 65535;
		s.skip_lo = 1;
		s.skip_hi = 0;
	}
	if (s.hi < s.lo)
		return s;
	s.span = s.hi - s.lo + 1;
	__u32 a = s.skip_lo > s.lo ? s.skip_lo : s.lo;
	__u32 b = s.skip_hi < s.hi ? s.skip_hi : s.hi;
	if (s.skip_lo <= s.skip_hi && a <= b) {
		s.skip_lo = a;
		s.skip_hi = b;
		s.span -= b - a + 1;
	} else {
		s.skip_lo = 1;
		s.skip_hi = 0;
	}
	return s;
}

/* port_at is the i-th port of s (i < span). */
static __always_inline __u32 port_at(const struct port_set *s, __u32 i)
{
	__u32 p = s->lo + i;
	if (s->skip_lo <= s->skip_hi && p >= s->skip_lo)
		p += s->skip_hi - s->skip_lo + 1;
	return p;
}

/* index_of is the index of port p in s, or -1 if s does not have it. */
static __always_inline long index_of(const struct port_set *s, __u32 p)
{
	if (p < s->lo || p > s->hi)
		return -1;
	if (s->skip_lo <= s->skip_hi) {
		if (p >= s->skip_lo && p <= s->skip_hi)
			return -1;
		if (p > s->skip_hi)
			return p - s->lo - (s->skip_hi - s->skip_lo + 1);
	}
	return p - s->lo;
}

/*
 * IPv6. There is no IP header checksum; the TCP, UDP and ICMPv6 checksums
 * all cover a pseudo header with both addresses (RFC 8200 §8.1).
 */
#define IP6_SRC_OFF (ETH_HLEN + offsetof(struct ipv6hdr, saddr))
#define IP6_DST_OFF (ETH_HLEN + offsetof(struct ipv6hdr, daddr))

static __always_inline __u32 l4_csum_off6(__u8 proto, __u32 l4_off)
{
	switch (proto) {
	case IPPROTO_TCP:
		return l4_off + 16;
	case IPPROTO_UDP:
	case IPPROTO_ICMPV6:
		return l4_off + (proto == IPPROTO_UDP ? 6 : 2);
	}
	return 0;
}

static __always_inline __u32 port_off6(__u8 proto, __u32 l4_off, int dst)
{
	if (proto == IPPROTO_ICMPV6)
		return l4_off + 4;
	return l4_off + (dst ? 2 : 0);
}

/* csum_replace16 is csum_replace for a 16-byte field (an IPv6 address). */
static __always_inline __sum16 csum_replace16(__sum16 check, struct in6_key from, struct in6_key to)
{
	__s64 d = bpf_csum_diff(from.a, 16, to.a, 16, (__u16)~check);
	__u32 s = (__u32)d;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__sum16)~s;
}

/* rewrite6 is rewrite for IPv6: the source (dst=0) or destination (dst=1)
 * address and port become addr and port. */
static __always_inline int rewrite6(struct __sk_buff *skb, const struct pkt6 *p, int dst, struct in6_key addr, __be16 port)
{
	struct in6_key old = dst ? p->daddr : p->saddr;
	__be16 old_port = (dst && p->proto != IPPROTO_ICMPV6) ? p->dport : p->sport;
	__u32 csum = p->frag == FRAG_LATER ? 0 : l4_csum_off6(p->proto, p->l4_off);
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	int new_port = csum && port != old_port;
	if (csum) {
		__s64 d = bpf_csum_diff(old.a, 16, addr.a, 16, 0);
		if (bpf_l4_csum_replace(skb, csum, 0, (__u32)d, BPF_F_PSEUDO_HDR | mangled) < 0)
			return -1;
		if (new_port && bpf_l4_csum_replace(skb, csum, old_port, port, mangled | 2) < 0)
			return -1;
	}
	if (new_port && store(skb, port_off6(p->proto, p->l4_off, dst), &port, 2) < 0)
		return -1;
	return store(skb, dst ? IP6_DST_OFF : IP6_SRC_OFF, &addr, 16);
}

/* rewrite_icmp_error6 is rewrite_icmp_error for ICMPv6: the outer address
 * (dst=1: destination, dst=0: source) becomes outer_addr, the quoted
 * packet's other side becomes addr:port, and the quoted UDP or echo
 * checksum (both cover the quoted addresses) and the ICMPv6 checksum (which
 * covers the outer addresses and the quote) are fixed. */
static __always_inline int rewrite_icmp_error6(struct __sk_buff *skb, const struct pkt6 *p, int dst, struct in6_key outer_addr,
					       struct in6_key addr, __be16 port)
{
	__u32 icmp_csum = p->l4_off + 2;
	__u32 in_addr_off = p->inner_off + (dst ? offsetof(struct ipv6hdr, saddr) : offsetof(struct ipv6hdr, daddr));
	struct in6_key old_addr = dst ? p->inner_saddr : p->inner_daddr;
	__be16 old_port = (dst || p->inner_proto == IPPROTO_ICMPV6) ? p->inner_sport : p->inner_dport;
	__u32 in_port_off = port_off6(p->inner_proto, p->inner_l4_off, !dst);

	if (p->inner_proto == IPPROTO_UDP || p->inner_proto == IPPROTO_ICMPV6) {
		__sum16 old_l4, new_l4;
		__u32 off = p->inner_l4_off + (p->inner_proto == IPPROTO_UDP ? 6 : 2);
		if (bpf_skb_load_bytes(skb, off, &old_l4, 2) < 0)
			return -1;
		new_l4 = old_l4;
		if (old_l4 || p->inner_proto == IPPROTO_ICMPV6) {
			new_l4 = csum_replace16(old_l4, old_addr, addr);
			new_l4 = csum_replace2(new_l4, old_port, port);
			if (!new_l4 && p->inner_proto == IPPROTO_UDP)
				new_l4 = 0xffff;
		}
		if (new_l4 != old_l4 && (bpf_l4_csum_replace(skb, icmp_csum, old_l4, new_l4, 2) < 0 ||
					 bpf_skb_store_bytes(skb, off, &new_l4, 2, 0) < 0))
			return -1;
	}
	__s64 d = bpf_csum_diff(old_addr.a, 16, addr.a, 16, 0);
	if (bpf_l4_csum_replace(skb, icmp_csum, 0, (__u32)d, 0) < 0 ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_port, port, 2) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, in_addr_off, &addr, 16, 0) < 0 ||
	    bpf_skb_store_bytes(skb, in_port_off, &port, 2, 0) < 0)
		return -1;
	struct in6_key outer_old = dst ? p->daddr : p->saddr;
	d = bpf_csum_diff(outer_old.a, 16, outer_addr.a, 16, 0);
	if (bpf_l4_csum_replace(skb, icmp_csum, 0, (__u32)d, BPF_F_PSEUDO_HDR) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, dst ? IP6_DST_OFF : IP6_SRC_OFF, &outer_addr, 16, 0);
}

/* published6 is published for IPv6. */
static __always_inline struct port_backend6 *published6(__u8 proto, struct in6_key addr, __be16 port)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	struct port6_key k = {.addr = addr, .port = port, .proto = proto};
	struct port_backend6 *b = bpf_map_lookup_elem(&ports6, &k);
	if (b)
		return b;
	__builtin_memset(&k.addr, 0, sizeof(k.addr));
	return bpf_map_lookup_elem(&ports6, &k);
}

/* How long a fragmented datagram's state lives after its last fragment
 * (frag_of). */
volatile const __u64 frag_timeout = 30 * SEC_NS;

#define FAMILY 4
#include "nat_family.h"
#undef FAMILY
#define FAMILY 6
#include "nat_family.h"
#undef FAMILY

#endif
