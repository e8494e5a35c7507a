/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Translation pairs (nat.h) for one IP version (family.h): nat.h includes
 * it for IPv4 and IPv6. No include guard.
 */
#include "family.h"

/* reply_of is the tuple of the replies to a flow sent as k. */
static __always_inline TUPLE F(reply_of)(const TUPLE *k)
{
	TUPLE r = {.saddr = k->daddr, .daddr = k->saddr, .proto = k->proto};
	if (k->proto == ICMP_PROTO) {
		r.sport = k->sport; /* the echo identifier */
	} else {
		r.sport = k->dport;
		r.dport = k->sport;
	}
	return r;
}

/* frag_of is the state a datagram's first fragment left for its later
 * ones (frags_family.h), refreshed; 0 if none is left. */
static __always_inline FRAG_ENTRY *F(frag_of)(const PKT *p, __u64 now)
{
	FRAG_KEY fk = {.saddr = p->saddr, .daddr = p->daddr, .id = p->ip_id, .proto = p->proto};
	FRAG_ENTRY *fe = bpf_map_lookup_elem(&FRAGS_MAP, &fk);
	if (!fe || expired(now, fe->seen, frag_timeout))
		return 0;
	fe->seen = now;
	return fe;
}

/* frag_first records what was done to a datagram's first fragment p: its
 * new source and destination (ADDR_NONE: unchanged). */
static __always_inline void F(frag_first)(const PKT *p, ADDR new_saddr, ADDR new_daddr, __u64 now)
{
	FRAG_KEY fk = {.saddr = p->saddr, .daddr = p->daddr, .id = p->ip_id, .proto = p->proto};
	FRAG_ENTRY fe = {.seen = now, .new_saddr = new_saddr, .new_daddr = new_daddr};
	bpf_map_update_elem(&FRAGS_MAP, &fk, &fe, BPF_ANY);
}

static __always_inline int F(nat_live)(const TUPLE *k, NAT *e, __u64 now)
{
	return !expired(now, e->last_seen, ct_timeout(k->proto, e->flags & 0xffff));
}

/* rev_key_of is the nat_rev key of the pair whose forward half is (k, f):
 * the replies to k as translated (for a published port, the peer's
 * packets to the host address and port; from the endpoint itself, with
 * its own address as source). */
static __always_inline TUPLE F(rev_key_of)(const TUPLE *k, const NAT *f)
{
	TUPLE t = *k;
	t.saddr = f->addr;
	t.sport = f->port;
	TUPLE r = F(reply_of)(&t);
	if (f->flags & NAT_F_SELF)
		r.saddr = k->saddr;
	return r;
}

/* fwd_key_of is the nat_fwd key of the pair whose reply half is (r, e)
 * (not for NAT_F_SELF, whose forward key has the gateway as peer). */
static __always_inline TUPLE F(fwd_key_of)(const TUPLE *r, const NAT *e)
{
	TUPLE k = {.saddr = e->addr, .daddr = r->saddr, .sport = e->port, .proto = r->proto};
	if (r->proto != ICMP_PROTO)
		k.dport = r->sport;
	return k;
}

/* owns reports whether reply half e belongs to the pair with forward key
 * k (it translates back to k's source). */
static __always_inline int F(owns)(const NAT *e, const TUPLE *k)
{
	return ADDR_EQ(e->addr, k->saddr) && e->port == k->sport && !(e->flags & NAT_F_HOST);
}

/* nat_pair_delete removes the pair with forward half (k, f): its reply
 * half if it still belongs to it, then the forward half; the CPU whose
 * delete of the forward half succeeds releases the pair's charges, so a
 * pair is released once however many CPUs remove it. */
static __always_inline int F(nat_pair_delete)(const TUPLE *k, const NAT *f)
{
	TUPLE r = F(rev_key_of)(k, f);
	__u32 slot = f->slot;
	ADDR remote = f->remote;
	NAT *rv = bpf_map_lookup_elem(&REV_MAP, &r);
	if (rv && F(owns)(rv, k))
		bpf_map_delete_elem(&REV_MAP, &r);
	if (bpf_map_delete_elem(&FWD_MAP, k) != 0)
		return 0;
	uncharge(slot);
	if (ADDR_SET(remote))
		uncharge_remote(&REMOTE_MAP, &remote);
	stat_add(STAT_NAT_LIVE, -1);
	return 1;
}

/* nat_reset removes the pair with forward key k, if there is one: its
 * flow is over, and such a flow holds no port and no charge. */
static __always_inline void F(nat_reset)(const TUPLE *k)
{
	NAT *f = bpf_map_lookup_elem(&FWD_MAP, k);
	if (f)
		F(nat_pair_delete)(k, f);
}

/* done_this_second reports whether a packet p of a flow whose half has
 * mark and flags may skip the flow's once-a-second bookkeeping: the half's
 * packets did it this second, and nothing starts or ends the flow (no
 * SYN, FIN or RST in p, nothing closing in flags), so every segment that
 * can is followed in full. */
static __always_inline int F(done_this_second)(__u16 mark, __u32 flags, const PKT *p, __u64 now)
{
	return mark == period_of(now) && !(flags & CT_F_ENDING) &&
	       !(p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)));
}

/* nat_refresh refreshes the pair with forward half (k, f) for a packet p
 * the container sent (extra: flags to add): an expired pair or a new SYN
 * starts over in place, the container's TCP window and close are tracked,
 * and a reply half gone missing is re-created. It returns -1 when the
 * reply tuple now belongs to another flow (the forward half is stale), 1
 * when p ends the flow (flow_ends): the caller removes the pair. */
static __always_inline int F(nat_refresh)(struct __sk_buff *skb, const TUPLE *k, NAT *f, const PKT *p,
				       __u32 extra, __u64 now)
{
	__u16 mark = period_of(now);
	/* A packet of a live flow that refreshed its reply half this second:
	 * that half is still the flow's (no other flow can take a reply tuple
	 * before it expires, tens of seconds after its refresh) and its
	 * timestamp can wait a second. */
	if (F(done_this_second)(f->mark, f->flags, p, now) && F(nat_live)(k, f, now)) {
		f->last_seen = now;
		f->flags |= extra;
		F(tcp_track_local)(skb, &f->tcp, &f->flags, p);
		return 0;
	}
	TUPLE r = F(rev_key_of)(k, f);
	NAT *rv = bpf_map_lookup_elem(&REV_MAP, &r);
	if (rv && !F(owns)(rv, k))
		return -1;
	if (!F(nat_live)(k, f, now) || F(tcp_syn_only)(p)) {
		f->created = now;
		f->flags &= ~(__u32)0xffff;
	}
	int last = F(flow_ends)(skb, p, &f->tcp, &f->flags, 1);
	f->last_seen = now;
	f->flags |= F(tcp_close_flags)(p) | extra;
	F(tcp_track_local)(skb, &f->tcp, &f->flags, p);
	if (rv) {
		rv->last_seen = now;
		rv->flags = f->flags;
		f->mark = mark;
		return last;
	}
	if (last)
		return last; /* no reply half to restore for a flow that ends */
	struct ip_endpoint *src = bpf_map_lookup_elem(&EP_MAP, &k->saddr);
	NAT n = {.addr = k->saddr, .port = k->sport, .created = f->created, .last_seen = now,
			      .flags = f->flags, .ifindex = src ? src->ifindex : 0};
	if (bpf_map_update_elem(&REV_MAP, &r, &n, BPF_NOEXIST) != 0)
		return -1;
	f->mark = mark;
	return 0;
}

/* An allocation in progress (nat_alloc). */
struct F(alloc) {
	TUPLE t;       /* the translated tuple; t.sport is the port tried */
	NAT rev; /* the reply half to insert */
	struct port_set ports;
	__u64 now;
	__u32 start;
	__u8 found;   /* t.sport is ours */
	__u8 adopted; /* ... because this flow's own reply half held it */
};

/* 0 → this CPU's allocation in progress: too large for the stack next to
 * an IPv6 packet. A program runs to its end on one CPU, never nested. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct F(alloc));
} F(alloc_scratch) SEC(".maps");

/* alloc_try claims t.sport for the allocation; 1 when it did. */
static __always_inline int F(alloc_try)(struct F(alloc) *a)
{
	/* A published port of the address: the peer's connection to it must
	 * reach the published endpoint, not look like a reply. */
	if (a->t.proto != ICMP_PROTO && F(published)(a->t.proto, a->t.saddr, a->t.sport))
		return 0;
	TUPLE r = F(reply_of)(&a->t);
	NAT *old = bpf_map_lookup_elem(&REV_MAP, &r);
	if (old) {
		if (ADDR_EQ(old->addr, a->rev.addr) && old->port == a->rev.port && !(old->flags & (NAT_F_HOST | NAT_F_DNAT))) {
			/* This flow's own reply half, left when its forward half
			 * went: take it back. */
			old->last_seen = a->now;
			a->found = a->adopted = 1;
			return 1;
		}
		if (!expired(a->now, old->last_seen, ct_timeout(r.proto, old->flags & 0xffff)))
			return 0; /* a live flow (the host's too) holds it */
		bpf_map_delete_elem(&REV_MAP, &r);
	}
	if (bpf_map_update_elem(&REV_MAP, &r, &a->rev, BPF_NOEXIST) < 0)
		return 0;
	a->found = 1;
	return 1;
}

/* One port tried; data points to the allocation's pointer (bpf_loop
 * passes only a stack address). */
static long F(alloc_step)(__u32 i, void *data)
{
	struct F(alloc) *a = *(struct F(alloc) **)data;
	if (!a->ports.span)
		return 1;
	a->t.sport = bpf_htons(port_at(&a->ports, (a->start + i) % a->ports.span));
	return F(alloc_try)(a);
}

/* nat_alloc creates the translation of a container's flow k (from veth
 * ifindex, charged to slot) to address addr: a free port, the container's
 * own when the range has it and it is free, and both halves. It returns
 * PASS with *port set, or why the flow is refused. */
static __always_inline __u32 F(nat_alloc)(struct __sk_buff *skb, const TUPLE *k, ADDR addr, __u32 ifindex, __u32 slot,
				       const PKT *p, __be16 *port)
{
	__u32 zero = 0;
	struct F(alloc) *a = bpf_map_lookup_elem(&F(alloc_scratch), &zero);
	if (!a)
		return REASON_NAT_EXHAUSTED;
	if (charge(slot) < 0)
		return REASON_FLOW_LIMIT;
	__builtin_memset(a, 0, sizeof(*a));
	a->t = *k;
	a->now = clock_ns();
	a->t.saddr = addr;
	a->rev.addr = k->saddr;
	a->rev.port = k->sport;
	a->rev.created = a->rev.last_seen = a->now;
	a->rev.flags = F(tcp_close_flags)(p);
	a->rev.ifindex = ifindex;
	if (has_ports(k->proto)) {
		a->ports = nat_ports(k->proto);
		long own = index_of(&a->ports, bpf_ntohs(k->sport));
		if (a->ports.span)
			a->start = own >= 0 ? own : bpf_get_prandom_u32() % a->ports.span;
		bpf_loop(a->ports.span < NAT_PROBES ? a->ports.span : NAT_PROBES, F(alloc_step), &a, 0);
	} else {
		/* No ports: the address alone, one flow per remote. */
		F(alloc_try)(a);
	}
	if (!a->found) {
		uncharge(slot);
		stat_inc(STAT_NAT_EXHAUSTED);
		return REASON_NAT_EXHAUSTED;
	}
	/* The forward half, made from the reply half (inserted already): the
	 * same times and flags. */
	NAT *fwd = &a->rev;
	fwd->addr = addr;
	fwd->port = a->t.sport;
	fwd->ifindex = 0;
	fwd->slot = slot;
	F(tcp_track_local)(skb, &fwd->tcp, &fwd->flags, p);
	long rc = bpf_map_update_elem(&FWD_MAP, k, fwd, BPF_NOEXIST);
	if (rc == 0) {
		stat_inc(STAT_NAT_CREATED);
		stat_add(STAT_NAT_LIVE, 1);
		*port = a->t.sport;
		return PASS;
	}
	/* Another CPU translated the same flow first: use its translation and
	 * give back the port this one claimed. */
	uncharge(slot);
	if (!a->adopted) {
		TUPLE r = F(reply_of)(&a->t);
		bpf_map_delete_elem(&REV_MAP, &r);
	}
	if (rc != -E_EXIST) {
		table_full();
		return REASON_FLOW_LIMIT;
	}
	NAT *w = bpf_map_lookup_elem(&FWD_MAP, k);
	if (!w || !ADDR_EQ(w->addr, addr))
		return REASON_NAT_EXHAUSTED;
	*port = w->port;
	return PASS;
}

/* nat_host records a flow the host itself sends from a masquerade
 * address on a port containers may be given, so that no container is given
 * it with the same peer. Where a container's translation already holds
 * the tuple, the host's flow wins: its replies must reach it, and the
 * container's next packet gets another port. */
static __always_inline void F(nat_host)(const PKT *p)
{
	if (p->frag == FRAG_LATER || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP &&
				      !(p->proto == ICMP_PROTO && p->icmp_type == ECHO_REQUEST)))
		return;
	if (p->proto != ICMP_PROTO) {
		struct port_set s = nat_ports(p->proto);
		if (index_of(&s, bpf_ntohs(p->sport)) < 0)
			return; /* never a container's: nothing can collide */
		/* Nor is a published port (alloc_try): what the host sends from
		 * one answers a connection that is gone (its RST), and recorded
		 * it would send the peer's next connection from that port to the
		 * host instead of to the published endpoint. */
		if (F(published)(p->proto, p->saddr, p->sport))
			return;
	}
	TUPLE k = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	TUPLE r = F(reply_of)(&k);
	__u64 now = clock_ns();
	NAT *e = bpf_map_lookup_elem(&REV_MAP, &r);
	if (e && (e->flags & NAT_F_HOST)) {
		if (F(tcp_syn_only)(p))
			e->flags = NAT_F_HOST;
		e->last_seen = now;
		e->flags |= F(tcp_close_flags)(p);
		return;
	}
	if (e && F(nat_live)(&r, e, now)) {
		TUPLE fk = F(fwd_key_of)(&r, e);
		NAT *f = bpf_map_lookup_elem(&FWD_MAP, &fk);
		if (!(f && F(nat_pair_delete)(&fk, f)))
			bpf_map_delete_elem(&REV_MAP, &r);
		stat_inc(STAT_HOST_TAKEOVER);
	}
	NAT n = {.addr = p->saddr, .port = p->sport, .created = now, .last_seen = now,
			      .flags = NAT_F_HOST | F(tcp_close_flags)(p)};
	bpf_map_update_elem(&REV_MAP, &r, &n, BPF_ANY);
}

