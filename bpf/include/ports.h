/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Published ports: destination translation (DNAT) of connections to a
 * host address and published port, to the endpoint behind it.
 *
 * A connection is a pair of NAT entries flagged NAT_F_DNAT (shared.h): nat_rev, keyed
 * by the peer's packets as they arrive (peer → host:port), holds the
 * endpoint's address and port; nat_fwd, keyed by the endpoint's replies
 * (endpoint → peer), holds the host address and port to put back. For a
 * peer outside the host, from_uplink opens and applies it (untranslate)
 * and to_uplink reverses it (translate), like masquerade's. For a peer
 * container (hairpin, NAT_F_LOCAL), the sender's from_container judges
 * the connection as Docker's FORWARD chain would after DNAT (icc,
 * isolation, internal), translates and delivers it straight into the
 * endpoint; the endpoint's from_container translates the replies back and
 * delivers them straight into the peer. A container reaching its own port
 * is also given its gateway as source (NAT_F_SELF), as Docker's
 * `-s c -d c` MASQUERADE does, so its replies come back through us.
 *
 * Only a packet that can start a connection opens one: a TCP SYN, or a UDP
 * datagram that does not answer a connected socket of the host's (a host
 * connection's replies whose port happens to be published stay the host's).
 * A connection is charged to the endpoint (flows.h): the published one for
 * peers outside, also to the peer's address; the sending one for hairpin.
 */
#ifndef BPFNET_PORTS_H
#define BPFNET_PORTS_H

#include "maps.h"
#include "parse.h"
#include "nat.h"
#include "fastpath.h"

/* opens_connection reports whether a packet may start a connection to a
 * published port: a TCP SYN (not a bare ACK, which would open state for a
 * connection nobody started), or any UDP datagram. */
static __always_inline int opens_connection(const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return tcp_syn_only(p);
	return p->proto == IPPROTO_UDP;
}

/* dnat_open records a connection from p's sender to a published port:
 * the endpoint's replies will go to peer (the sender, or the gateway for
 * NAT_F_SELF), delivered to peer_ifindex for NAT_F_LOCAL. It is charged to
 * slot and, when set, to remote. Returns PASS or why it was refused. */
static __always_inline __u32 dnat_open(const struct pkt *p, const struct port_backend *b, __be32 peer, __u32 peer_ifindex,
				       __u32 flags, __u32 slot, __be32 remote)
{
	__u64 now = bpf_ktime_get_ns();
	struct tuple in = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	struct tuple out = {.saddr = b->addr, .daddr = peer, .sport = b->port, .dport = p->sport, .proto = p->proto};
	/* An earlier connection on the same ports is over. */
	struct nat_entry *old = bpf_map_lookup_elem(&nat_fwd, &out);
	if (old)
		nat_pair_delete(&out, old);
	if (charge(slot) < 0)
		return REASON_FLOW_LIMIT;
	if (remote && charge_remote(&remote_flows, &remote) < 0) {
		uncharge(slot);
		return REASON_FLOW_LIMIT;
	}
	struct nat_entry rev = {.addr = b->addr, .port = b->port, .created = now, .last_seen = now,
				.flags = NAT_F_DNAT | flags | tcp_close_flags(p), .ifindex = b->ifindex};
	struct nat_entry fwd = {.addr = p->daddr, .port = p->dport, .created = now, .last_seen = now,
				.flags = rev.flags, .ifindex = peer_ifindex, .slot = slot, .remote = remote};
	long rc = bpf_map_update_elem(&nat_rev, &in, &rev, BPF_ANY);
	if (rc == 0) {
		rc = bpf_map_update_elem(&nat_fwd, &out, &fwd, BPF_NOEXIST);
		if (rc == 0) {
			stat_inc(STAT_DNAT_CREATED);
			stat_add(STAT_NAT_LIVE, 1);
			return PASS;
		}
		if (rc != -E_EXIST)
			bpf_map_delete_elem(&nat_rev, &in);
	}
	uncharge(slot);
	if (remote)
		uncharge_remote(&remote_flows, &remote);
	if (rc == -E_EXIST)
		return PASS; /* another CPU opened it first */
	table_full();
	return REASON_FLOW_LIMIT;
}

/* dnat_inbound reports whether a packet entering a network from outside
 * (already translated) belongs to a connection to a published port. */
static __always_inline int dnat_inbound(const struct pkt *p)
{
	struct tuple k = {.saddr = p->daddr, .daddr = p->saddr, .sport = p->dport, .dport = p->sport, .proto = p->proto};
	struct nat_entry *f = bpf_map_lookup_elem(&nat_fwd, &k);
	return f && (f->flags & NAT_F_DNAT) && nat_live(&k, f, bpf_ktime_get_ns());
}

/* host_answer reports whether a UDP datagram from a container to a host
 * address answers a connected socket of the host's (the exact 4-tuple):
 * then it is the host's, even on a published port. */
static __always_inline int host_answer(struct __sk_buff *skb, const struct pkt *p)
{
	if (p->proto != IPPROTO_UDP)
		return 0;
	struct bpf_sock_tuple t = {.ipv4 = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport}};
	struct bpf_sock *sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	int connected = sk->dst_port != 0;
	bpf_sk_release(sk);
	return connected;
}

/* deliver hands a packet from a container (already translated) straight
 * to endpoint `to` of network net_id, as the host would route it: the
 * bridge's MAC as source, TTL decremented, the receiver's counters. */
static __always_inline int deliver(struct __sk_buff *skb, const struct pkt *p, __u32 to, __u32 net_id)
{
	struct endpoint_info *de = bpf_map_lookup_elem(&ep_by_ifindex, &to);
	struct network_info *n = bpf_map_lookup_elem(&networks, &net_id);
	if (!de || !n)
		return TC_ACT_SHOT;
	if (dec_ttl(skb, p) < 0)
		return TC_ACT_SHOT; /* TTL 1 into a container port: nothing to answer with */
	if (set_macs(skb, de->mac, n->mac) < 0)
		return TC_ACT_SHOT;
	count(de->slot, DIR_TO_CONTAINER, skb->len);
	return bpf_redirect_peer(to, 0);
}

/* hairpin handles a packet endpoint ep (behind ifindex) sends to a host
 * address. Not a published port (or not a connection to one): -1 (the
 * host's). Otherwise the verdict Docker's FORWARD gives after DNAT (a drop
 * is counted and returned), or the connection is translated and
 * delivered. Fragments are not translated (the host answers them). */
static __always_inline int hairpin(struct __sk_buff *skb, __u32 ifindex, const struct endpoint_info *ep, struct pkt *p)
{
	if (p->frag != FRAG_NONE)
		return -1;
	struct port_backend *b = published(p->proto, p->daddr, p->dport);
	if (!b)
		return -1;
	__be32 addr = b->addr, gateway = b->gateway;
	__be16 port = b->port;
	__u32 to = b->ifindex, net_id = b->net_id, flags = NAT_F_LOCAL;
	struct tuple in = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	__u64 now = bpf_ktime_get_ns();
	struct nat_entry *e = bpf_map_lookup_elem(&nat_rev, &in);
	int open = e && (e->flags & NAT_F_LOCAL) && e->addr == addr && e->port == port && nat_live(&in, e, now);
	if (!open && (!opens_connection(p) || host_answer(skb, p)))
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
		return drop_pkt(skb, ifindex, DIR_FROM_CONTAINER, v, p);
	if (to == ifindex)
		flags |= NAT_F_SELF;
	__be32 peer = (flags & NAT_F_SELF) ? gateway : p->saddr;
	if (open) {
		e->last_seen = now;
		e->flags |= tcp_close_flags(p);
	} else {
		v = dnat_open(p, b, peer, ifindex, flags, ep->slot, 0);
		if (v != PASS)
			return drop_pkt(skb, ifindex, DIR_FROM_CONTAINER, v, p);
	}
	if (rewrite(skb, p, 1, addr, port) < 0)
		return TC_ACT_SHOT;
	p->daddr = addr;
	p->dport = port;
	if ((flags & NAT_F_SELF) && rewrite(skb, p, 0, gateway, p->sport) < 0)
		return TC_ACT_SHOT;
	return deliver(skb, p, to, net_id);
}

/* hairpin_reply translates back and delivers a reply that endpoint ep
 * (which publishes ports) sends on a hairpin connection; -1 if p is not
 * one. */
static __always_inline int hairpin_reply(struct __sk_buff *skb, const struct endpoint_info *ep, struct pkt *p)
{
	if (p->frag != FRAG_NONE)
		return -1;
	struct tuple k = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	struct nat_entry *f = bpf_map_lookup_elem(&nat_fwd, &k);
	__u64 now = bpf_ktime_get_ns();
	if (!f || !(f->flags & NAT_F_LOCAL) || !nat_live(&k, f, now) || nat_refresh(skb, &k, f, p, CT_F_REPLIED, now) < 0)
		return -1;
	__be32 addr = f->addr;
	__be16 port = f->port;
	__u32 to = f->ifindex, self = f->flags & NAT_F_SELF;
	if (rewrite(skb, p, 0, addr, port) < 0)
		return TC_ACT_SHOT;
	p->saddr = addr;
	p->sport = port;
	if (self && rewrite(skb, p, 1, ep->ip, p->dport) < 0)
		return TC_ACT_SHOT;
	return deliver(skb, p, to, ep->net_id);
}

#endif
