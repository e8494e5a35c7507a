/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the uplink programs do to containers' flows, for one IP version
 * (family.h): datapath.c includes it for IPv4 and IPv6. No include
 * guard.
 */
#include "family.h"

/* untranslate reverses the translation of a packet arriving on an uplink:
 * a reply to a container's translated flow, a packet of a connection to a
 * published port, an ICMP error about either (sent to the flow's own
 * translated address), or a later fragment of one; p is updated to the
 * packet as translated back. It returns what it did (enum untranslated).
 * now: clock_ns(). */
static __always_inline enum untranslated F(untranslate)(struct __sk_buff *skb, PKT *p, __u64 now)
{
	if (p->frag == FRAG_LATER) {
		FRAG_ENTRY *fe = F(frag_of)(p, now);
		ADDR to = fe ? fe->new_daddr : ADDR_NONE;
		if (!fe) {
			to = F(early_fragment)(p, now);
			if (ADDR_SET(to) && !ADDR_EQ(to, p->daddr))
				F(frag_first)(p, ADDR_NONE, to, now);
		}
		if (!ADDR_SET(to) || ADDR_EQ(to, p->daddr) || F(rewrite)(skb, p, 1, to, 0) < 0)
			return UT_NONE;
		p->daddr = to;
		/* Before its first: let in on the sender's replies, which a
		 * translated flow records under the translated address, where
		 * judge_from_outside cannot look; it finds the fragment let in. */
		if (!fe)
			F(frag_first)(p, ADDR_NONE, ADDR_NONE, now);
		return UT_BACK;
	}
	if (p->has_inner) {
		/* The quoted packet is one a container sent, as translated; the
		 * error must be addressed to its (translated) source. */
		if (!ADDR_EQ(p->daddr, p->inner_saddr))
			return UT_NONE;
		TUPLE q = {.saddr = p->inner_saddr, .daddr = p->inner_daddr, .sport = p->inner_sport,
				  .dport = p->inner_dport, .proto = p->inner_proto};
		TUPLE r = F(reply_of)(&q);
		NAT *e = bpf_map_lookup_elem(&REV_MAP, &r);
		if (!e || !F(nat_live)(&r, e, now))
			return UT_NONE;
		if (e->flags & NAT_F_HOST)
			return UT_HOST;
		ADDR addr = e->addr;
		__be16 port = e->port;
		if (F(rewrite_icmp_error)(skb, p, 1, addr, addr, port) < 0)
			return UT_NONE;
		p->daddr = addr;
		p->inner_saddr = addr;
		p->inner_sport = port;
		return UT_BACK;
	}
	TUPLE r = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	if (p->proto == ICMP_PROTO && p->icmp_type != ECHO_REPLY)
		return UT_NONE;
	NAT *e = bpf_map_lookup_elem(&REV_MAP, &r);
	if (!e || !F(nat_live)(&r, e, now))
		return UT_NONE;
	if (e->flags & NAT_F_HOST) {
		e->last_seen = now;
		return UT_HOST;
	}
	/* A pure SYN starts a connection: it is never a reply to a container's
	 * translated flow (the peer would answer with SYN-ACK). */
	if (!(e->flags & NAT_F_DNAT) && F(tcp_syn_only)(p))
		return UT_NONE;
	ADDR addr = e->addr;
	__be16 port = e->port;
	__u16 mark = period_of(now);
	/* A reply of a flow whose replies did the once-a-second work this
	 * second, with nothing closing: the connection table and the forward
	 * half were refreshed within timeouts of tens of seconds and know it
	 * replied; the peer is recorded. */
	if (p->frag == FRAG_NONE && !(e->flags & NAT_F_DNAT) && F(done_this_second)(e->mark, e->flags, p, now)) {
		e->last_seen = now;
		if (F(rewrite)(skb, p, 1, addr, port) < 0)
			return UT_NONE;
		p->daddr = addr;
		p->dport = port;
		if (p->proto == ICMP_PROTO)
			p->sport = port;
		return UT_TRACKED;
	}
	/* Packets to a published port start the connection: no reply. */
	__u32 replied = (e->flags & NAT_F_DNAT) ? 0 : CT_F_REPLIED;
	TUPLE k = F(fwd_key_of)(&r, e);
	NAT *f = bpf_map_lookup_elem(&FWD_MAP, &k);
	/* A published-port connection's reply half without its forward half
	 * is what a concurrent removal can leave (a packet of the flow on
	 * another CPU re-created it, nat_refresh): the connection is over, and
	 * a new SYN on its ports opens the next one (dnat_open). */
	if (!f && (e->flags & NAT_F_DNAT))
		return UT_NONE;
	__u32 close = 0;
	int end = 0;
	if (f) {
		/* A RST or FIN from this side ends the flow only inside the
		 * window the container advertised; a RST the container takes,
		 * or the last ACK of an orderly close, removes the pair once it
		 * is translated. */
		close = F(remote_flags)(&f->tcp, f->flags, p);
		end = F(flow_ends)(skb, p, &f->tcp, &f->flags, 0);
		f->last_seen = now;
		f->flags |= replied | close;
	}
	e->last_seen = now;
	e->flags |= replied | close;
	/* The peer record (for early fragments) needs one reply a second,
	 * not every reply. */
	int record = e->mark != mark;
	e->mark = mark;
	if (end)
		F(nat_pair_delete)(&k, f); /* addr and port are copied */
	if (F(rewrite)(skb, p, 1, addr, port) < 0)
		return UT_NONE;
	if (p->frag == FRAG_FIRST)
		F(frag_first)(p, ADDR_NONE, addr, now);
	if (record)
		F(peer_replied)(p->saddr, p->daddr, addr, p->proto, now);
	p->daddr = addr;
	p->dport = port;
	if (p->proto == ICMP_PROTO)
		p->sport = port;
	return UT_BACK;
}

/* translate applies (or creates) the translation of a packet a container
 * of network n sends out of uplink ifindex: the reverse of a connection to
 * a published port, else masquerade or host_ipv4 SNAT when the network has
 * it (masq). */
static __always_inline __u32 F(translate)(struct __sk_buff *skb, PKT *p, const struct network_info *n, __u32 ifindex,
				       int masq)
{
	__u64 now = clock_ns();
	if (p->frag == FRAG_LATER) {
		FRAG_ENTRY *fe = F(frag_of)(p, now);
		if (!fe || !ADDR_SET(fe->new_saddr))
			return masq ? REASON_FRAGMENT : PASS;
		ADDR to = fe->new_saddr;
		return F(rewrite)(skb, p, 0, to, 0) < 0 ? REASON_MALFORMED : PASS;
	}
	if (p->has_inner) {
		/* An ICMP error about a packet the container got: the quoted
		 * packet went remote → container, as translated back, and the
		 * error must come from its destination. */
		if (!ADDR_EQ(p->saddr, p->inner_daddr))
			return masq ? REASON_SPOOF : PASS;
		TUPLE q = {.saddr = p->inner_daddr, .daddr = p->inner_saddr, .sport = p->inner_dport,
				  .dport = p->inner_sport, .proto = p->inner_proto};
		NAT *f = bpf_map_lookup_elem(&FWD_MAP, &q);
		if (!f || !F(nat_live)(&q, f, now))
			return masq ? REASON_UNSOLICITED : PASS; /* never leak a masqueraded address */
		return F(rewrite_icmp_error)(skb, p, 0, f->addr, f->addr, f->port) < 0 ? REASON_MALFORMED : PASS;
	}
	if (p->proto == ICMP_PROTO && p->icmp_type != ECHO_REQUEST && p->icmp_type != ECHO_REPLY)
		return masq ? REASON_UNSUPPORTED : PASS;
	TUPLE k = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	NAT *f = bpf_map_lookup_elem(&FWD_MAP, &k);
	ADDR addr = {};
	__be16 port = 0;
	int last = 0;
	if (f && (f->flags & NAT_F_DNAT) && F(nat_live)(&k, f, now)) {
		/* A reply on a connection to a published port. */
		last = F(nat_refresh)(skb, &k, f, p, CT_F_REPLIED, now);
		if (last < 0)
			return REASON_UNSOLICITED;
		addr = f->addr;
		port = f->port;
		if (last)
			F(nat_pair_delete)(&k, f); /* its last packet, translated below */
		goto out;
	}
	if (!masq)
		return PASS;
	if (F(masq_addr)(n, ifindex, &addr) < 0)
		return REASON_NAT_EXHAUSTED; /* no address to masquerade to */
	/* The flow's translation, refreshed (and revived, or its reply half
	 * restored, as needed); stale (another address, or its reply tuple
	 * taken over) it is replaced. */
	if (f && (!ADDR_EQ(f->addr, addr) || (f->flags & NAT_F_DNAT) || (last = F(nat_refresh)(skb, &k, f, p, 0, now)) < 0)) {
		F(nat_pair_delete)(&k, f);
		f = 0;
	}
	if (f) {
		port = f->port;
		if (last)
			F(nat_pair_delete)(&k, f); /* its last packet, translated below */
	} else if (F(tcp_close_flags)(p)) {
		/* A FIN or RST of no flow (one reset or collected already) starts
		 * nothing, and leaves with no translation: never untranslated. */
		return REASON_UNSOLICITED;
	} else {
		struct ip_endpoint *src = bpf_map_lookup_elem(&EP_MAP, &p->saddr);
		__u32 v = F(nat_alloc)(skb, &k, addr, src ? src->ifindex : 0, src ? src->slot : 0, p, &port);
		if (v != PASS)
			return v;
	}
out:
	if (F(rewrite)(skb, p, 0, addr, port) < 0)
		return REASON_MALFORMED;
	if (p->frag == FRAG_FIRST)
		F(frag_first)(p, addr, ADDR_NONE, now);
	return PASS;
}

/* host_error translates, in an ICMP error the host itself sends out of an
 * uplink about a packet it forwarded to a container (already translated
 * back), the quoted packet's container address and port to what the
 * outside knows, so the error neither leaks the address nor misses its
 * flow. */
static __always_inline void F(host_error)(struct __sk_buff *skb, const PKT *p)
{
	if (!p->has_inner || !F(managed)(p->inner_daddr))
		return;
	TUPLE q = {.saddr = p->inner_daddr, .daddr = p->inner_saddr, .sport = p->inner_dport,
			  .dport = p->inner_sport, .proto = p->inner_proto};
	NAT *f = bpf_map_lookup_elem(&FWD_MAP, &q);
	if (f && F(nat_live)(&q, f, clock_ns()))
		F(rewrite_icmp_error)(skb, p, 0, p->saddr, f->addr, f->port);
}
