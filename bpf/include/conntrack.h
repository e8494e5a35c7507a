/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A small connection table for flows that containers start towards the
 * outside, so that replies (and ICMP errors about the flow) can be let in
 * while unsolicited traffic is not. Timeouts follow Linux conntrack's
 * defaults in spirit; they are knobs so tests can shorten them.
 */
#ifndef BPFNET_CONNTRACK_H
#define BPFNET_CONNTRACK_H

#include "maps.h"
#include "parse.h"

#define SEC_NS 1000000000ULL

volatile const __u64 ct_timeout_tcp_syn = 120 * SEC_NS;       /* no reply yet */
volatile const __u64 ct_timeout_tcp_est = 432000 * SEC_NS;    /* established: 5 days */
volatile const __u64 ct_timeout_tcp_fin = 120 * SEC_NS;       /* after a FIN */
volatile const __u64 ct_timeout_tcp_rst = 10 * SEC_NS;        /* after a RST */
volatile const __u64 ct_timeout_udp = 30 * SEC_NS;            /* no reply yet */
volatile const __u64 ct_timeout_udp_stream = 120 * SEC_NS;    /* replied */
volatile const __u64 ct_timeout_other = 30 * SEC_NS;          /* ICMP and the rest */

static __always_inline __u64 ct_timeout(const struct tuple *k, __u32 flags)
{
	switch (k->proto) {
	case IPPROTO_TCP:
		if (flags & CT_F_RST)
			return ct_timeout_tcp_rst;
		if (flags & CT_F_FIN)
			return ct_timeout_tcp_fin;
		return (flags & CT_F_REPLIED) ? ct_timeout_tcp_est : ct_timeout_tcp_syn;
	case IPPROTO_UDP:
		return (flags & CT_F_REPLIED) ? ct_timeout_udp_stream : ct_timeout_udp;
	}
	return ct_timeout_other;
}

/* expired reports whether an entry last seen at `seen` has timed out at
 * `now`. Another CPU may have stamped the entry after this one read the
 * clock, so seen > now means "just seen", not a wrapped difference. */
static __always_inline int expired(__u64 now, __u64 seen, __u64 timeout)
{
	return now > seen && now - seen > timeout;
}

static __always_inline __u32 tcp_close_flags(const struct pkt *p)
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

/* ct_outbound records or refreshes the flow of a packet a container sends
 * to the outside. Later fragments carry no ports and are not tracked. */
static __always_inline void ct_outbound(const struct pkt *p)
{
	if (p->frag == FRAG_LATER)
		return;
	/* ICMP echo replies and errors a container sends answer the outside;
	 * they start nothing. */
	if (p->proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHO)
		return;
	struct tuple k = {
		.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	__u64 now = bpf_ktime_get_ns();
	struct ct_entry *e = bpf_map_lookup_elem(&conntrack, &k);
	if (e && !expired(now, e->last_seen, ct_timeout(&k, e->flags))) {
		e->last_seen = now;
		/* A new SYN on a closed flow reopens it. */
		if (p->proto == IPPROTO_TCP && (p->tcp_flags & TCP_FLAG_SYN) && !(p->tcp_flags & TCP_FLAG_ACK))
			e->flags &= ~(CT_F_FIN | CT_F_RST);
		e->flags |= tcp_close_flags(p);
		return;
	}
	struct ct_entry n = {.created = now, .last_seen = now, .flags = tcp_close_flags(p)};
	bpf_map_update_elem(&conntrack, &k, &n, BPF_ANY);
}

/* ct_lookup finds a live entry by key, or returns NULL. */
static __always_inline struct ct_entry *ct_lookup(struct tuple *k, __u64 now)
{
	struct ct_entry *e = bpf_map_lookup_elem(&conntrack, k);
	if (!e)
		return 0;
	if (expired(now, e->last_seen, ct_timeout(k, e->flags))) {
		bpf_map_delete_elem(&conntrack, k);
		return 0;
	}
	return e;
}

/* ct_reply reports whether a packet from the outside to a container is a
 * reply to a tracked flow, or an ICMP error about one; replies refresh the
 * entry. */
static __always_inline int ct_reply(const struct pkt *p)
{
	__u64 now = bpf_ktime_get_ns();
	struct tuple k = {.proto = p->proto};

	if (p->has_inner) {
		/* The quoted packet is one the container sent. */
		k.saddr = p->inner_saddr;
		k.daddr = p->inner_daddr;
		k.sport = p->inner_sport;
		k.dport = p->inner_dport;
		k.proto = p->inner_proto;
		return ct_lookup(&k, now) != 0;
	}
	if (p->proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHOREPLY)
		return 0;
	k.saddr = p->daddr;
	k.daddr = p->saddr;
	k.sport = p->dport;
	k.dport = p->sport;
	if (p->proto == IPPROTO_ICMP) {
		k.sport = p->sport;
		k.dport = 0;
	}
	struct ct_entry *e = ct_lookup(&k, now);
	if (!e)
		return 0;
	e->last_seen = now;
	e->flags |= CT_F_REPLIED | tcp_close_flags(p);
	return 1;
}

#endif
