/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Fragments, for one IP version (family.h): datapath.c includes it for
 * IPv4 and IPv6. A datagram's later fragments carry no ports, so they
 * follow their first: frags remembers (and translates) what the first did,
 * for frag_timeout after the last fragment seen (frag_of and frag_first,
 * nat_family.h). A later fragment that
 * arrives before its first is let through when its sender lately replied
 * to the same destination (peers), which names the one container it goes
 * to. And what a packet from the outside must be to enter a network
 * (judge_from_outside). No include guard.
 */
#include "family.h"

/* peer_replied records that remote sent a reply to local (as it arrived),
 * which went to container; at most once a second per key. */
static __always_inline void F(peer_replied)(ADDR remote, ADDR local, ADDR container, __u8 proto, __u64 now)
{
	PEER_KEY k = {.remote = remote, .local = local, .proto = proto};
	PEER_ENTRY *e = bpf_map_lookup_elem(&PEERS_MAP, &k);
	if (e && !expired(now, e->seen, SEC_NS)) {
		if (!ADDR_EQ(e->container, container))
			e->container = ADDR_NONE; /* more than one: ambiguous */
		return;
	}
	PEER_ENTRY n = {.seen = now, .container = container};
	if (e && !ADDR_EQ(e->container, container) && !expired(now, e->seen, frag_timeout))
		n.container = ADDR_NONE;
	bpf_map_update_elem(&PEERS_MAP, &k, &n, BPF_ANY);
}

/* early_fragment returns the container a later fragment without a first
 * goes to (its sender replied lately to its destination, and only one
 * container got those replies), or 0. */
static __always_inline ADDR F(early_fragment)(const PKT *p, __u64 now)
{
	PEER_KEY k = {.remote = p->saddr, .local = p->daddr, .proto = p->proto};
	PEER_ENTRY *e = bpf_map_lookup_elem(&PEERS_MAP, &k);
	if (!e || expired(now, e->seen, frag_timeout))
		return ADDR_NONE;
	return e->container;
}

/* judge_from_outside judges a packet from outside the host for a network
 * with flags net_flags, at clock_ns() now: only replies to tracked flows
 * (and ICMP errors about them, and fragments of an allowed datagram)
 * enter, and nothing enters an internal network. ut: what untranslate did
 * with it (UT_NONE where it did not run); a packet translated back has
 * had its peer recorded (peer_replied) under the address it came to. */
static __always_inline __u32 F(judge_from_outside)(struct __sk_buff *skb, __u32 net_flags, const PKT *p,
						   enum untranslated ut, __u64 now)
{
	if (net_flags & NET_F_INTERNAL)
		return REASON_INTERNAL;
	if (p->frag == FRAG_LATER) {
		if (F(frag_of)(p, now))
			return PASS;
		ADDR to = F(early_fragment)(p, now);
		if (!ADDR_EQ(to, p->daddr))
			return REASON_FRAGMENT;
		F(frag_first)(p, ADDR_NONE, ADDR_NONE, now);
		return PASS;
	}
	if (ut != UT_TRACKED && !F(ct_reply)(skb, p, now) && !F(dnat_inbound)(p, now))
		return REASON_UNSOLICITED;
	if (ut == UT_NONE)
		F(peer_replied)(p->saddr, p->daddr, p->daddr, p->proto, now);
	if (p->frag == FRAG_FIRST)
		F(frag_first)(p, ADDR_NONE, ADDR_NONE, now);
	return PASS;
}


