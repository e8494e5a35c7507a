/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The connection table's per-packet work, for one IP version (family.h):
 * conntrack.h includes it for IPv4 and IPv6. No include guard.
 */
#include "family.h"

static __always_inline __u32 F(tcp_close_flags)(const PKT *p)
{
	__u32 f = 0;
	if (p->proto != IPPROTO_TCP)
		return 0;
	if (p->tcp_flags & TCP_FLAG_FIN)
		f |= CT_F_FIN;
	if (p->tcp_flags & TCP_FLAG_RST)
		f |= CT_F_RST;
	return f;
}

/* tcp_syn_only: a SYN without ACK, a connection starting (again). */
static __always_inline int F(tcp_syn_only)(const PKT *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

/* tcp_wscale returns the window scale a SYN offers, 0 without the option. */
static __always_inline __u8 F(tcp_wscale)(struct __sk_buff *skb, const PKT *p)
{
	__u8 doff;
	if (bpf_skb_load_bytes(skb, p->l4_off + 12, &doff, 1) < 0)
		return 0;
	__u32 len = (doff >> 4) * 4;
	if (len <= 20)
		return 0;
	len -= 20;
	if (len > 40)
		len = 40;
	struct wscale_scan s = {.len = len};
	if (bpf_skb_load_bytes(skb, p->l4_off + 20, s.opts, len) < 0)
		return 0;
	bpf_loop(20, wscale_step, &s, 0);
	return s.shift;
}

/* tcp_track_local records, from a packet the container sent, its side of
 * a TCP flow: the window scale of its SYN, and the acknowledgement and
 * window of any segment with ACK. */
static __always_inline void F(tcp_track_local)(struct __sk_buff *skb, struct tcp_track *t, __u32 *flags, const PKT *p)
{
	if (p->proto != IPPROTO_TCP || p->frag == FRAG_LATER)
		return;
	if (p->tcp_flags & TCP_FLAG_SYN)
		t->wscale = F(tcp_wscale)(skb, p);
	if (!(p->tcp_flags & TCP_FLAG_ACK))
		return;
	t->ack = p->tcp_ack;
	/* The window of a SYN segment is never scaled (RFC 7323 §2.2). */
	__u32 shift = (p->tcp_flags & TCP_FLAG_SYN) ? 0 : t->wscale & 15;
	t->win = (__u32)p->tcp_win << shift;
	*flags |= CT_F_ACKED;
}

/* remote_close_ok reports whether a RST or FIN from the other side lies
 * in the window the container advertised: its sequence number at or after
 * what the container acknowledged, by less than the window (at least 64 KB,
 * for windows the container has not caught up with). Before the container
 * acknowledged anything nothing is believed; the flow then lives out its
 * unreplied timeout. */
static __always_inline int F(remote_close_ok)(const struct tcp_track *t, __u32 flags, const PKT *p)
{
	if (!(flags & CT_F_ACKED))
		return 0;
	__u32 win = t->win > 65535 ? t->win : 65535;
	return p->tcp_seq - t->ack <= win;
}

/* own_reset reports whether p, from the container, is a RST: its socket
 * for the flow is gone, and so is the flow. */
static __always_inline int F(own_reset)(const PKT *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & TCP_FLAG_RST);
}

/* tcp_end_seq is the sequence number after TCP segment p: its data and
 * FIN (the IP header's length, not the frame's, which may be padded). */
static __always_inline __u32 F(tcp_end_seq)(struct __sk_buff *skb, const PKT *p)
{
	__be16 len;
	__u8 doff;
#if FAMILY == 4
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 2, &len, 2) < 0)
		return p->tcp_seq + 1;
	__u32 end = ETH_HLEN + bpf_ntohs(len);
#else
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 4, &len, 2) < 0)
		return p->tcp_seq + 1;
	__u32 end = ETH_HLEN + IPV6_HLEN + bpf_ntohs(len);
#endif
	if (bpf_skb_load_bytes(skb, p->l4_off + 12, &doff, 1) < 0)
		return p->tcp_seq + 1;
	__u32 data_off = p->l4_off + (doff >> 4) * 4;
	__u32 data = end > data_off ? end - data_off : 0;
	return p->tcp_seq + data + ((p->tcp_flags & TCP_FLAG_FIN) ? 1 : 0);
}

/* closing follows the orderly close of a TCP flow (RFC 9293 §3.6) in its
 * entry's *flags and t->fin_end, for segment p from the container (own) or,
 * once believed, from the other side. It returns 1 when p is the flow's
 * last packet: both sides have sent their FIN, the second acknowledging
 * the first, and p is the ACK of the second from the side that closed
 * first. A simultaneous close (the FINs crossed, each side's ACK still to
 * come) is never ended here: it times out as before. */
static __always_inline int F(closing)(struct __sk_buff *skb, const PKT *p, struct tcp_track *t, __u32 *flags, int own)
{
	__u32 fl = *flags;
	__u8 tf = p->tcp_flags;
	int acks = (tf & TCP_FLAG_ACK) && (__s32)(p->tcp_ack - t->fin_end) >= 0;
	if (!(tf & TCP_FLAG_FIN)) {
		int second_own = (fl & CT_F_SECOND_OWN) != 0;
		return (fl & CT_F_CLOSED) && !(tf & TCP_FLAG_SYN) && own != second_own && acks;
	}
	__u32 mine = own ? CT_F_FIN_OWN : CT_F_FIN_PEER;
	if (!(fl & (CT_F_FIN_OWN | CT_F_FIN_PEER))) {
		t->fin_end = F(tcp_end_seq)(skb, p); /* the first FIN */
	} else if (!(fl & mine) && acks) {
		/* The second FIN, acknowledging the first: only its own ACK is
		 * left to pass. */
		t->fin_end = F(tcp_end_seq)(skb, p);
		fl |= CT_F_CLOSED | (own ? CT_F_SECOND_OWN : 0);
	}
	*flags = fl | mine;
	return 0;
}

/* tcp_ends reports whether segment p, from the container (own) or the
 * other side, ends a TCP flow whose entry has the container's track t
 * and *flags (which it updates as the flow closes): a RST the container
 * sends (its socket is gone), a RST from the other side at exactly the
 * sequence number the container acknowledged last (the one its TCP
 * accepts, RFC 5961 §3.2; one elsewhere in the window only draws a
 * challenge ACK), or the last ACK of an orderly close (closing). The other
 * side's segments count only inside the container's window. A global
 * function, which the verifier checks once (its pointers may be NULL to
 * it): inlined, or a static function, it is checked at every table update
 * with the caller's states, and took from_uplink over
 * TestVerifierHeadroom's budget. */
__noinline int F(tcp_ends)(struct __sk_buff *skb, const PKT *p, struct tcp_track *t, __u32 *flags, int own)
{
	if (!skb || !p || !t || !flags || p->frag == FRAG_LATER)
		return 0;
	if (!own && !F(remote_close_ok)(t, *flags, p))
		return 0;
	if (p->tcp_flags & TCP_FLAG_RST)
		return own || p->tcp_seq == t->ack;
	return F(closing)(skb, p, t, flags, own);
}

/* flow_ends is tcp_ends, called only for the segments that can end a flow
 * (a FIN, a RST, or any once both FINs are in): made for every segment,
 * the call cost the translation paths about 20 ns (TestProgramCost). */
static __always_inline int F(flow_ends)(struct __sk_buff *skb, const PKT *p, struct tcp_track *t, __u32 *flags, int own)
{
	return p->proto == IPPROTO_TCP && ((p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) || (*flags & CT_F_CLOSED)) &&
	       F(tcp_ends)(skb, p, t, flags, own);
}

/* remote_flags are the close flags of a packet from the other side that
 * may be applied to an entry with track t and flags. */
static __always_inline __u32 F(remote_flags)(const struct tcp_track *t, __u32 flags, const PKT *p)
{
	__u32 f = F(tcp_close_flags)(p);
	return f && F(remote_close_ok)(t, flags, p) ? f : 0;
}

/* ct_delete removes a connection-table entry and releases its charge (if
 * this CPU's delete is the one that removed it). */
static __always_inline int F(ct_delete)(const TUPLE *k, __u32 slot)
{
	if (bpf_map_delete_elem(&CT_MAP, k) != 0)
		return 0;
	uncharge(slot);
	stat_add(STAT_CT_LIVE, -1);
	return 1;
}

/* ct_outbound records or refreshes the flow of a packet a container (with
 * traffic slot `slot`) sends to the outside; a RST, or the last ACK of an
 * orderly close, removes it, and a FIN or RST records nothing new (Linux
 * conntrack calls them invalid). It returns PASS, or REASON_FLOW_LIMIT
 * when a new flow cannot be recorded. Later fragments carry no ports and
 * are not tracked. */
static __always_inline __u32 F(ct_outbound)(struct __sk_buff *skb, const PKT *p, __u32 slot)
{
	if (p->frag == FRAG_LATER)
		return PASS;
	/* ICMP echo replies and errors a container sends answer the outside;
	 * they start nothing. */
	if (p->proto == ICMP_PROTO && p->icmp_type != ECHO_REQUEST)
		return PASS;
	TUPLE k = {
		.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	__u64 now = clock_ns();
	struct ct_entry *e = bpf_map_lookup_elem(&CT_MAP, &k);
	if (e) {
		/* An expired entry (not yet collected) whose flow comes back, or
		 * a new SYN on the same ports: the flow starts over in place. */
		if (expired(now, e->last_seen, ct_timeout(k.proto, e->flags)) || F(tcp_syn_only)(p)) {
			e->created = now;
			e->flags = 0;
		}
		if (F(flow_ends)(skb, p, &e->tcp, &e->flags, 1)) {
			/* A flow that is over holds nothing: its entry and charge
			 * go now, not after a timeout. */
			F(ct_delete)(&k, e->slot);
			return PASS;
		}
		e->last_seen = now;
		e->flags |= F(tcp_close_flags)(p);
		F(tcp_track_local)(skb, &e->tcp, &e->flags, p);
		return PASS;
	}
	if (F(tcp_close_flags)(p))
		return PASS; /* a FIN or RST of a flow that is gone starts none */
	if (charge(slot) < 0)
		return REASON_FLOW_LIMIT;
	struct ct_entry n = {.created = now, .last_seen = now, .slot = slot};
	F(tcp_track_local)(skb, &n.tcp, &n.flags, p);
	long rc = bpf_map_update_elem(&CT_MAP, &k, &n, BPF_NOEXIST);
	if (rc == 0) {
		stat_add(STAT_CT_LIVE, 1);
		return PASS;
	}
	uncharge(slot);
	if (rc == -E_EXIST)
		return PASS; /* another CPU recorded it first */
	table_full();
	return REASON_FLOW_LIMIT;
}

/* ct_lookup finds a live entry by key, or returns NULL. */
static __always_inline struct ct_entry *F(ct_lookup)(TUPLE *k, __u64 now)
{
	struct ct_entry *e = bpf_map_lookup_elem(&CT_MAP, k);
	if (!e || expired(now, e->last_seen, ct_timeout(k->proto, e->flags)))
		return 0;
	return e;
}

/* ct_reply reports whether a packet from the outside to a container is a
 * reply to a tracked flow, or an ICMP error about one sent to the flow's
 * own container; replies refresh the entry, and close it only when
 * believed (remote_flags). A segment that ends the flow (flow_ends)
 * removes the entry. */
static __always_inline int F(ct_reply)(struct __sk_buff *skb, const PKT *p, __u64 now)
{
	TUPLE k = {.proto = p->proto};

	if (p->has_inner) {
		/* The quoted packet is one the container sent: the error must
		 * be addressed to its source, not to another container. */
		if (!ADDR_EQ(p->daddr, p->inner_saddr))
			return 0;
		k.saddr = p->inner_saddr;
		k.daddr = p->inner_daddr;
		k.sport = p->inner_sport;
		k.dport = p->inner_dport;
		k.proto = p->inner_proto;
		return F(ct_lookup)(&k, now) != 0;
	}
	if (p->proto == ICMP_PROTO && p->icmp_type != ECHO_REPLY)
		return 0;
	k.saddr = p->daddr;
	k.daddr = p->saddr;
	k.sport = p->dport;
	k.dport = p->sport;
	if (p->proto == ICMP_PROTO) {
		k.sport = p->sport;
		k.dport = 0;
	}
	struct ct_entry *e = F(ct_lookup)(&k, now);
	if (!e)
		return 0;
	if (F(flow_ends)(skb, p, &e->tcp, &e->flags, 0)) {
		F(ct_delete)(&k, e->slot);
		return 1;
	}
	e->last_seen = now;
	e->flags |= CT_F_REPLIED | F(remote_flags)(&e->tcp, e->flags, p);
	return 1;
}

