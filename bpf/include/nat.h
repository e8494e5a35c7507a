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

/* csum_replace2 is csum_replace for a 2-byte field (RFC 1624 eqn. 3). */
static __always_inline __sum16 csum_replace2(__sum16 check, __be16 from, __be16 to)
{
	__u32 s = (__u16)~check + (__u16)~from + (__u16)to;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__sum16)~s;
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

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_ICMP;
}

static __always_inline int nat_live(const struct tuple *k, struct nat_entry *e, __u64 now)
{
	return !expired(now, e->last_seen, ct_timeout(k, e->flags & 0xffff));
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

/* rev_key_of is the nat_rev key of the pair whose forward half is (k, f):
 * the replies to k as translated (for a published port, the peer's
 * packets to the host address and port; from the endpoint itself, with
 * its own address as source). */
static __always_inline struct tuple rev_key_of(const struct tuple *k, const struct nat_entry *f)
{
	struct tuple t = *k;
	t.saddr = f->addr;
	t.sport = f->port;
	struct tuple r = reply_of(&t);
	if (f->flags & NAT_F_SELF)
		r.saddr = k->saddr;
	return r;
}

/* fwd_key_of is the nat_fwd key of the pair whose reply half is (r, e)
 * (not for NAT_F_SELF, whose forward key has the gateway as peer). */
static __always_inline struct tuple fwd_key_of(const struct tuple *r, const struct nat_entry *e)
{
	struct tuple k = {.saddr = e->addr, .daddr = r->saddr, .sport = e->port, .proto = r->proto};
	if (r->proto != IPPROTO_ICMP)
		k.dport = r->sport;
	return k;
}

/* owns reports whether reply half e belongs to the pair with forward key
 * k (it translates back to k's source). */
static __always_inline int owns(const struct nat_entry *e, const struct tuple *k)
{
	return e->addr == k->saddr && e->port == k->sport && !(e->flags & NAT_F_HOST);
}

/* nat_pair_delete removes the pair with forward half (k, f): its reply
 * half if it still belongs to it, then the forward half; the CPU whose
 * delete of the forward half succeeds releases the pair's charges, so a
 * pair is released once however many CPUs remove it. */
static __always_inline int nat_pair_delete(const struct tuple *k, const struct nat_entry *f)
{
	struct tuple r = rev_key_of(k, f);
	__u32 slot = f->slot;
	__be32 remote = f->remote;
	struct nat_entry *rv = bpf_map_lookup_elem(&nat_rev, &r);
	if (rv && owns(rv, k))
		bpf_map_delete_elem(&nat_rev, &r);
	if (bpf_map_delete_elem(&nat_fwd, k) != 0)
		return 0;
	uncharge(slot);
	uncharge_remote(remote);
	stat_add(STAT_NAT_LIVE, -1);
	return 1;
}

/* nat_refresh refreshes the pair with forward half (k, f) for a packet p
 * the container sent (extra: flags to add): an expired pair or a new SYN
 * starts over in place, the container's TCP window is tracked, and a
 * reply half gone missing is re-created. It returns -1 when the reply
 * tuple now belongs to another flow: the forward half is stale. */
static __always_inline int nat_refresh(struct __sk_buff *skb, const struct tuple *k, struct nat_entry *f, const struct pkt *p,
				       __u32 extra, __u64 now)
{
	struct tuple r = rev_key_of(k, f);
	struct nat_entry *rv = bpf_map_lookup_elem(&nat_rev, &r);
	if (rv && !owns(rv, k))
		return -1;
	if (!nat_live(k, f, now) || tcp_syn_only(p)) {
		f->created = now;
		f->flags &= ~(__u32)0xffff;
	}
	f->last_seen = now;
	f->flags |= tcp_close_flags(p) | extra;
	tcp_track_local(skb, &f->tcp, &f->flags, p);
	if (rv) {
		rv->last_seen = now;
		rv->flags = f->flags;
		return 0;
	}
	struct ip_endpoint *src = bpf_map_lookup_elem(&ep_by_ip, &k->saddr);
	struct nat_entry n = {.addr = k->saddr, .port = k->sport, .created = f->created, .last_seen = now,
			      .flags = f->flags, .ifindex = src ? src->ifindex : 0};
	return bpf_map_update_elem(&nat_rev, &r, &n, BPF_NOEXIST) == 0 ? 0 : -1;
}

/* A port set: [lo, hi] less [skip_lo, skip_hi] (none when skip_lo >
 * skip_hi), span ports in all. */
struct port_set {
	__u32 lo, hi, skip_lo, skip_hi, span;
};

static __always_inline struct port_set nat_ports(__u8 proto)
{
	struct port_set s = {.lo = nat_port_min, .hi = nat_port_max, .skip_lo = nat_skip_min, .skip_hi = nat_skip_max};
	if (proto == IPPROTO_ICMP) {
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

/* An allocation in progress (nat_alloc). */
struct alloc {
	struct tuple t;       /* the translated tuple; t.sport is the port tried */
	struct nat_entry rev; /* the reply half to insert */
	struct port_set ports;
	__u64 now;
	__u32 start;
	__u8 found;   /* t.sport is ours */
	__u8 adopted; /* ... because this flow's own reply half held it */
};

/* alloc_try claims t.sport for the allocation; 1 when it did. */
static __always_inline int alloc_try(struct alloc *a)
{
	/* A published port of the address: the peer's connection to it must
	 * reach the published endpoint, not look like a reply. */
	if (a->t.proto != IPPROTO_ICMP && published(a->t.proto, a->t.saddr, a->t.sport))
		return 0;
	struct tuple r = reply_of(&a->t);
	struct nat_entry *old = bpf_map_lookup_elem(&nat_rev, &r);
	if (old) {
		if (old->addr == a->rev.addr && old->port == a->rev.port && !(old->flags & (NAT_F_HOST | NAT_F_DNAT))) {
			/* This flow's own reply half, left when its forward half
			 * went: take it back. */
			old->last_seen = a->now;
			a->found = a->adopted = 1;
			return 1;
		}
		if (!expired(a->now, old->last_seen, ct_timeout(&r, old->flags & 0xffff)))
			return 0; /* a live flow (the host's too) holds it */
		bpf_map_delete_elem(&nat_rev, &r);
	}
	if (bpf_map_update_elem(&nat_rev, &r, &a->rev, BPF_NOEXIST) < 0)
		return 0;
	a->found = 1;
	return 1;
}

static long alloc_step(__u32 i, void *data)
{
	struct alloc *a = data;
	if (!a->ports.span)
		return 1;
	a->t.sport = bpf_htons(port_at(&a->ports, (a->start + i) % a->ports.span));
	return alloc_try(a);
}

/* nat_alloc creates the translation of a container's flow k (from veth
 * ifindex, charged to slot) to address addr: a free port, the container's
 * own when the range has it and it is free, and both halves. It returns
 * PASS with *port set, or why the flow is refused. */
static __always_inline __u32 nat_alloc(struct __sk_buff *skb, const struct tuple *k, __be32 addr, __u32 ifindex, __u32 slot,
				       const struct pkt *p, __be16 *port)
{
	if (charge(slot) < 0)
		return REASON_FLOW_LIMIT;
	struct alloc a = {.t = *k, .now = bpf_ktime_get_ns()};
	a.t.saddr = addr;
	a.rev.addr = k->saddr;
	a.rev.port = k->sport;
	a.rev.created = a.rev.last_seen = a.now;
	a.rev.flags = tcp_close_flags(p);
	a.rev.ifindex = ifindex;
	if (has_ports(k->proto)) {
		a.ports = nat_ports(k->proto);
		long own = index_of(&a.ports, bpf_ntohs(k->sport));
		if (a.ports.span)
			a.start = own >= 0 ? own : bpf_get_prandom_u32() % a.ports.span;
		bpf_loop(a.ports.span < NAT_PROBES ? a.ports.span : NAT_PROBES, alloc_step, &a, 0);
	} else {
		/* No ports: the address alone, one flow per remote. */
		alloc_try(&a);
	}
	if (!a.found) {
		uncharge(slot);
		stat_inc(STAT_NAT_EXHAUSTED);
		return REASON_NAT_EXHAUSTED;
	}
	struct nat_entry fwd = {.addr = addr, .port = a.t.sport, .created = a.now, .last_seen = a.now, .flags = a.rev.flags,
				.slot = slot};
	tcp_track_local(skb, &fwd.tcp, &fwd.flags, p);
	long rc = bpf_map_update_elem(&nat_fwd, k, &fwd, BPF_NOEXIST);
	if (rc == 0) {
		stat_inc(STAT_NAT_CREATED);
		stat_add(STAT_NAT_LIVE, 1);
		*port = a.t.sport;
		return PASS;
	}
	/* Another CPU translated the same flow first: use its translation and
	 * give back the port this one claimed. */
	uncharge(slot);
	if (!a.adopted) {
		struct tuple r = reply_of(&a.t);
		bpf_map_delete_elem(&nat_rev, &r);
	}
	if (rc != -E_EXIST) {
		table_full();
		return REASON_FLOW_LIMIT;
	}
	struct nat_entry *w = bpf_map_lookup_elem(&nat_fwd, k);
	if (!w || w->addr != addr)
		return REASON_NAT_EXHAUSTED;
	*port = w->port;
	return PASS;
}

/* nat_host records a flow the host itself sends from a masquerade
 * address on a port containers may be given, so that no container is given
 * it with the same peer. Where a container's translation already holds
 * the tuple, the host's flow wins: its replies must reach it, and the
 * container's next packet gets another port. */
static __always_inline void nat_host(const struct pkt *p)
{
	if (p->frag == FRAG_LATER || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP &&
				      !(p->proto == IPPROTO_ICMP && p->icmp_type == ICMP_ECHO)))
		return;
	if (p->proto != IPPROTO_ICMP) {
		struct port_set s = nat_ports(p->proto);
		if (index_of(&s, bpf_ntohs(p->sport)) < 0)
			return; /* never a container's: nothing can collide */
	}
	struct tuple k = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	struct tuple r = reply_of(&k);
	__u64 now = bpf_ktime_get_ns();
	struct nat_entry *e = bpf_map_lookup_elem(&nat_rev, &r);
	if (e && (e->flags & NAT_F_HOST)) {
		if (tcp_syn_only(p))
			e->flags = NAT_F_HOST;
		e->last_seen = now;
		e->flags |= tcp_close_flags(p);
		return;
	}
	if (e && nat_live(&r, e, now)) {
		struct tuple fk = fwd_key_of(&r, e);
		struct nat_entry *f = bpf_map_lookup_elem(&nat_fwd, &fk);
		if (!(f && nat_pair_delete(&fk, f)))
			bpf_map_delete_elem(&nat_rev, &r);
		stat_inc(STAT_HOST_TAKEOVER);
	}
	struct nat_entry n = {.addr = p->saddr, .port = p->sport, .created = now, .last_seen = now,
			      .flags = NAT_F_HOST | tcp_close_flags(p)};
	bpf_map_update_elem(&nat_rev, &r, &n, BPF_ANY);
}

#endif
