/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Published ports (ports.h) for one IP version (family.h): ports.h
 * includes it for IPv4 and IPv6. No include guard.
 */
#include "family.h"


/* opens_connection reports whether a packet may start a connection to a
 * published port: a TCP SYN (not a bare ACK, which would open state for a
 * connection nobody started), or any UDP datagram. */
static __always_inline int F(opens_connection)(const PKT *p)
{
	if (p->proto == IPPROTO_TCP)
		return F(tcp_syn_only)(p);
	return p->proto == IPPROTO_UDP;
}

/* What dnat_open works on: the connection's two tuples and the entry it
 * writes as both halves. */
struct F(dnat_work) {
	TUPLE in;  /* the peer's packets as they arrive */
	TUPLE out; /* the endpoint's replies */
	NAT e;
	__u32 follow; /* hairpin delivered a client's TCP segment on connection
		       * `out`, whose close hairpin_close follows */
};

/* 0 → this CPU's dnat_open work, off the stack (an IPv6 connection's
 * would take hairpin6 over BPF's 512 bytes). A program runs to its end
 * on one CPU, never nested. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct F(dnat_work));
} F(dnat_scratch) SEC(".maps");

/* dnat_reply_tuple sets out to the endpoint's replies on a connection
 * from p's sender to published port b, sent to peer: the key of the
 * connection's forward half. */
static __always_inline void F(dnat_reply_tuple)(TUPLE *out, const PKT *p, const BACKEND *b, ADDR peer)
{
	__builtin_memset(out, 0, sizeof(*out));
	out->saddr = b->addr;
	out->daddr = peer;
	out->sport = b->port;
	out->dport = p->sport;
	out->proto = p->proto;
}

/* dnat_open records a connection from p's sender to a published port:
 * the endpoint's replies will go to peer (the sender, or the gateway for
 * NAT_F_SELF), delivered to peer_ifindex for NAT_F_LOCAL. It is charged to
 * slot and, when set, to remote. Returns PASS or why it was refused. */
static __always_inline __u32 F(dnat_open)(const PKT *p, const BACKEND *b, ADDR peer, __u32 peer_ifindex,
				       __u32 flags, __u32 slot, ADDR remote)
{
	__u32 zero = 0;
	struct F(dnat_work) *w = bpf_map_lookup_elem(&F(dnat_scratch), &zero);
	if (!w)
		return REASON_FLOW_LIMIT;
	__u64 now = clock_ns();
	__builtin_memset(w, 0, sizeof(*w));
	TUPLE *in = &w->in, *out = &w->out;
	NAT *e = &w->e;
	in->saddr = p->saddr;
	in->daddr = p->daddr;
	in->sport = p->sport;
	in->dport = p->dport;
	in->proto = p->proto;
	F(dnat_reply_tuple)(out, p, b, peer);
	F(nat_reset)(out); /* an earlier connection on the same ports is over */
	if (charge(slot) < 0)
		return REASON_FLOW_LIMIT;
	if (ADDR_SET(remote) && charge_remote(&REMOTE_MAP, &remote) < 0) {
		uncharge(slot);
		return REASON_FLOW_LIMIT;
	}
	e->addr = b->addr;
	e->port = b->port;
	e->created = e->last_seen = now;
	e->flags = NAT_F_DNAT | flags | F(tcp_close_flags)(p);
	e->ifindex = b->ifindex;
	long rc = bpf_map_update_elem(&REV_MAP, in, e, BPF_ANY);
	if (rc == 0) {
		/* The forward half: the same times and flags, the address the
		 * peer used, and the pair's charges. */
		e->addr = p->daddr;
		e->port = p->dport;
		e->ifindex = peer_ifindex;
		e->slot = slot;
		e->remote = remote;
		rc = bpf_map_update_elem(&FWD_MAP, out, e, BPF_NOEXIST);
		if (rc == 0) {
			stat_inc(STAT_DNAT_CREATED);
			stat_add(STAT_NAT_LIVE, 1);
			return PASS;
		}
		if (rc != -E_EXIST)
			bpf_map_delete_elem(&REV_MAP, in);
	}
	uncharge(slot);
	if (ADDR_SET(remote))
		uncharge_remote(&REMOTE_MAP, &remote);
	if (rc == -E_EXIST)
		return PASS; /* another CPU opened it first */
	table_full();
	return REASON_FLOW_LIMIT;
}

/* dnat_inbound reports whether a packet entering a network from outside
 * (already translated) belongs to a connection to a published port. */
static __always_inline int F(dnat_inbound)(const PKT *p, __u64 now)
{
	TUPLE k = {.saddr = p->daddr, .daddr = p->saddr, .sport = p->dport, .dport = p->sport, .proto = p->proto};
	NAT *f = bpf_map_lookup_elem(&FWD_MAP, &k);
	return f && (f->flags & NAT_F_DNAT) && F(nat_live)(&k, f, now);
}

/* host_answer reports whether a UDP datagram from a container to a host
 * address answers a connected socket of the host's (the exact 4-tuple):
 * then it is the host's, even on a published port. */
static __always_inline int F(host_answer)(struct __sk_buff *skb, const PKT *p)
{
	if (p->proto != IPPROTO_UDP)
		return 0;
#if FAMILY == 4
	struct bpf_sock_tuple t = {.ipv4 = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport}};
	struct bpf_sock *sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
#else
	struct bpf_sock_tuple t = {.ipv6 = {.sport = p->sport, .dport = p->dport}};
	__builtin_memcpy(t.ipv6.saddr, &p->saddr, 16);
	__builtin_memcpy(t.ipv6.daddr, &p->daddr, 16);
	struct bpf_sock *sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
#endif
	if (!sk)
		return 0;
	int connected = sk->dst_port != 0;
	bpf_sk_release(sk);
	return connected;
}

/* deliver hands a packet from a container (already translated) straight
 * to endpoint `to` of network net_id, as the host would route it: the
 * bridge's MAC as source, TTL decremented, the receiver's counters. */
static __always_inline int F(deliver)(struct __sk_buff *skb, const PKT *p, __u32 to, __u32 net_id)
{
	struct endpoint_info *de = bpf_map_lookup_elem(&ep_by_ifindex, &to);
	struct network_info *n = bpf_map_lookup_elem(&networks, &net_id);
	if (!de || !n)
		return TC_ACT_SHOT;
	if (F(dec_ttl)(skb, p) < 0)
		return TC_ACT_SHOT; /* TTL 1 into a container port: nothing to answer with */
	if (set_macs(skb, de->mac, n->mac) < 0)
		return TC_ACT_SHOT;
	count(de->slot, DIR_TO_CONTAINER, skb);
	return bpf_redirect_peer(to, 0);
}

/* hairpin and hairpin_reply are BPF functions of their own: few packets
 * take them, and inlined they would take from_container over BPF's 512
 * bytes of stack (with IPv6's). */

/* hairpin_fragment delivers a later fragment of a datagram whose first
 * fragment hairpin or hairpin_reply translated and delivered: translated
 * as its first was, to the same endpoint. -1 if its first was not (frags
 * of other paths name no endpoint as destination, or nothing new). */
static __always_inline int F(hairpin_fragment)(struct __sk_buff *skb, PKT *p)
{
	FRAG_ENTRY *fe = F(frag_of)(p, clock_ns());
	if (!fe || (!ADDR_SET(fe->new_saddr) && !ADDR_SET(fe->new_daddr)))
		return -1;
	ADDR from = fe->new_saddr, to = ADDR_SET(fe->new_daddr) ? fe->new_daddr : p->daddr;
	struct ip_endpoint *dst = bpf_map_lookup_elem(&EP_MAP, &to);
	if (!dst)
		return -1;
	__u32 ifindex = dst->ifindex, net_id = dst->net_id;
	if (!ADDR_EQ(to, p->daddr)) {
		if (F(rewrite)(skb, p, 1, to, 0) < 0)
			return TC_ACT_SHOT;
		p->daddr = to;
	}
	if (ADDR_SET(from) && F(rewrite)(skb, p, 0, from, 0) < 0)
		return TC_ACT_SHOT;
	return F(deliver)(skb, p, ifindex, net_id);
}

/* hairpin handles a packet endpoint ep (behind ifindex) sends to a host
 * address. Not a published port (or not a connection to one): -1 (the
 * host's). Otherwise the verdict Docker's FORWARD gives after DNAT (a drop
 * is counted and returned), or the connection is translated and
 * delivered. A datagram's first fragment is handled as a whole packet and
 * its later ones follow it (hairpin_fragment), as Docker's DNAT after
 * conntrack's reassembly delivers the datagram. */
static __noinline int F(hairpin)(struct __sk_buff *skb, __u32 ifindex, const struct endpoint_info *ep, PKT *p)
{
	if (p->frag == FRAG_LATER)
		return F(hairpin_fragment)(skb, p);
	BACKEND *b = F(published)(p->proto, p->daddr, p->dport);
	if (!b)
		return -1;
	ADDR addr = b->addr, gateway = b->gateway;
	__be16 port = b->port;
	__u32 to = b->ifindex, net_id = b->net_id, flags = NAT_F_LOCAL;
	/* The connection's tuple, in dnat_open's work area (which dnat_open
	 * fills again): off the stack. */
	__u32 zero = 0;
	struct F(dnat_work) *w = bpf_map_lookup_elem(&F(dnat_scratch), &zero);
	if (!w)
		return -1;
	TUPLE *in = &w->in;
	__builtin_memset(in, 0, sizeof(*in));
	in->saddr = p->saddr;
	in->daddr = p->daddr;
	in->sport = p->sport;
	in->dport = p->dport;
	in->proto = p->proto;
	__u64 now = clock_ns();
	NAT *e = bpf_map_lookup_elem(&REV_MAP, in);
	int open = e && (e->flags & NAT_F_LOCAL) && ADDR_EQ(e->addr, addr) && e->port == port && F(nat_live)(in, e, now);
	if (!open && (!F(opens_connection)(p) || F(host_answer)(skb, p)))
		return -1;
	__u32 v = PASS;
	if (net_id == ep->net_id) {
		if (!(ep->net_flags & NET_F_ICC))
			v = REASON_ICC;
	} else {
		struct network_info *dn = bpf_map_lookup_elem(&networks, &net_id);
		v = ((ep->net_flags | (dn ? dn->flags : 0)) & NET_F_INTERNAL) ? REASON_INTERNAL : REASON_ISOLATION;
	}
	if (v != PASS)
		return F(drop_pkt)(skb, ifindex, DIR_FROM_CONTAINER, v, p);
	if (to == ifindex)
		flags |= NAT_F_SELF;
	ADDR peer = (flags & NAT_F_SELF) ? gateway : p->saddr;
	if (open)
		F(dnat_reply_tuple)(&w->out, p, b, peer); /* the pair's forward key */
	if (open && F(own_reset)(p)) {
		F(nat_reset)(&w->out); /* the client reset it: the pair goes */
	} else if (open) {
		e->last_seen = now;
		e->flags |= F(tcp_close_flags)(p);
	} else {
		ADDR no_remote = {}; /* a container: charged to its slot alone */
		v = F(dnat_open)(p, b, peer, ifindex, flags, ep->slot, no_remote);
		if (v != PASS)
			return F(drop_pkt)(skb, ifindex, DIR_FROM_CONTAINER, v, p);
	}
	if (p->frag == FRAG_FIRST)
		F(frag_first)(p, (flags & NAT_F_SELF) ? gateway : ADDR_NONE, addr, now);
	if (F(rewrite)(skb, p, 1, addr, port) < 0)
		return TC_ACT_SHOT;
	p->daddr = addr;
	p->dport = port;
	if ((flags & NAT_F_SELF) && F(rewrite)(skb, p, 0, gateway, p->sport) < 0)
		return TC_ACT_SHOT;
	int rc = F(deliver)(skb, p, to, net_id);
	w->follow = open && p->proto == IPPROTO_TCP && rc == TC_ACT_REDIRECT;
	return rc;
}

/* hairpin_close follows, after hairpin delivered it, a client's TCP
 * segment on an open hairpin connection as untranslate follows the
 * outside's: its FIN, and the last ACK of an orderly close, which removes
 * the pair (its RST did already, in hairpin). Separate from hairpin so
 * their stacks never add up (IPv6's would pass BPF's 512 bytes). */
static __noinline void F(hairpin_close)(struct __sk_buff *skb, const PKT *p)
{
	__u32 zero = 0;
	struct F(dnat_work) *w = bpf_map_lookup_elem(&F(dnat_scratch), &zero);
	if (!w || !w->follow)
		return;
	w->follow = 0;
	NAT *f = bpf_map_lookup_elem(&FWD_MAP, &w->out);
	if (!f)
		return;
	__u32 close = F(remote_flags)(&f->tcp, f->flags, p);
	if (F(flow_ends)(skb, p, &f->tcp, &f->flags, 0)) {
		F(nat_pair_delete)(&w->out, f);
		return;
	}
	f->flags |= close;
}

/* hairpin_reply translates back and delivers a reply that endpoint ep
 * (which publishes ports) sends on a hairpin connection, fragments as in
 * hairpin; -1 if p is not one. */
static __noinline int F(hairpin_reply)(struct __sk_buff *skb, const struct endpoint_info *ep, PKT *p)
{
	if (p->frag == FRAG_LATER)
		return F(hairpin_fragment)(skb, p);
	TUPLE k = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	NAT *f = bpf_map_lookup_elem(&FWD_MAP, &k);
	__u64 now = clock_ns();
	if (!f || !(f->flags & NAT_F_LOCAL) || !F(nat_live)(&k, f, now))
		return -1;
	int last = F(nat_refresh)(skb, &k, f, p, CT_F_REPLIED, now);
	if (last < 0)
		return -1;
	ADDR addr = f->addr;
	__be16 port = f->port;
	__u32 to = f->ifindex, self = f->flags & NAT_F_SELF;
	if (last)
		F(nat_pair_delete)(&k, f); /* the endpoint reset it */
	if (p->frag == FRAG_FIRST)
		F(frag_first)(p, addr, self ? F(ep_addr)(ep) : ADDR_NONE, now);
	if (F(rewrite)(skb, p, 0, addr, port) < 0)
		return TC_ACT_SHOT;
	p->saddr = addr;
	p->sport = port;
	if (self && F(rewrite)(skb, p, 1, F(ep_addr)(ep), p->dport) < 0)
		return TC_ACT_SHOT;
	return F(deliver)(skb, p, to, ep->net_id);
}

