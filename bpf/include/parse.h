/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing. Every header is bounds-checked against the packet; a
 * header that does not fit, an IPv4 header with a bad version or length,
 * or a VLAN tag makes the packet malformed, and malformed packets are
 * dropped, never passed on unchecked.
 */
#ifndef BPFNET_PARSE_H
#define BPFNET_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "shared.h"

/* From RFC 792 (linux/icmp.h pulls in libc headers). */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define IPV4_MAX_HLEN 60
#define L4_MIN_LEN 8 /* ports, or ICMP type/code/checksum/id/seq */
#define TCP_FLAGS_OFF 13
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* skb->pkt_type of a multicast or broadcast frame the host sent and looped
 * back to itself (linux/if_packet.h). */
#define PACKET_LOOPBACK 5

#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff

enum frag_kind {
	FRAG_NONE = 0,
	FRAG_FIRST = 1, /* offset 0, more fragments follow: has the L4 header */
	FRAG_LATER = 2, /* offset > 0: no L4 header */
};

/* A parsed IPv4 packet. For ICMP errors (destination unreachable, time
 * exceeded, parameter problem) inner_* describe the packet they quote. */
struct pkt {
	__u16 l4_off;    /* offset of the L4 header in the frame */
	__u16 inner_off; /* ICMP errors: offset of the quoted IP header */
	__u16 inner_l4_off;
	__u8 ttl;
	__u8 tos;
	__be32 saddr;
	__be32 daddr;
	__be16 sport; /* ICMP echo: the identifier */
	__be16 dport;
	__be16 ip_id;
	__u8 proto;
	__u8 tcp_flags;
	__u16 tcp_win; /* TCP: window field, host order */
	__u32 tcp_seq; /* TCP: sequence number, host order */
	__u32 tcp_ack; /* TCP: acknowledgement number, host order */
	__u8 frag; /* enum frag_kind */
	__u8 icmp_type;
	__u8 has_inner;
	__u8 inner_proto;
	__be32 inner_saddr;
	__be32 inner_daddr;
	__be16 inner_sport;
	__be16 inner_dport;
};

/* pull makes the first len bytes (or all of a shorter packet) directly
 * accessible. */
static __always_inline void pull(struct __sk_buff *skb, __u32 len)
{
	if (len > skb->len)
		len = skb->len;
	if ((void *)(long)skb->data + len > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, len);
}

static __always_inline int is_icmp_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

/* parse_l4 fills ports (and TCP flags) from the L4 header at l4. Returns 0,
 * or -1 if the header does not fit. */
static __always_inline int parse_ports(void *l4, void *end, __u8 proto, __be16 *sport, __be16 *dport)
{
	if (l4 + L4_MIN_LEN > end)
		return -1;
	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		*sport = ((__be16 *)l4)[0];
		*dport = ((__be16 *)l4)[1];
		return 0;
	case IPPROTO_ICMP: {
		struct icmphdr *icmp = l4;
		if (icmp->type == ICMP_ECHO || icmp->type == ICMP_ECHOREPLY)
			*sport = icmp->id;
		else
			*sport = 0;
		*dport = 0;
		return 0;
	}
	}
	*sport = 0;
	*dport = 0;
	return 0;
}

/* parse_ipv4 parses the IPv4 packet after the Ethernet header. Returns 0,
 * or -1 for a malformed packet. */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct pkt *p)
{
	pull(skb, ETH_HLEN + 2 * IPV4_MAX_HLEN + 2 * L4_MIN_LEN + 12);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;

	__builtin_memset(p, 0, sizeof(*p));
	if ((void *)(ip + 1) > end)
		return -1;
	__u32 hlen = ip->ihl * 4;
	if (ip->version != 4 || hlen < sizeof(*ip) || bpf_ntohs(ip->tot_len) < hlen)
		return -1;
	if (skb->len < ETH_HLEN + bpf_ntohs(ip->tot_len))
		return -1;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->ip_id = ip->id;
	p->ttl = ip->ttl;
	p->tos = ip->tos;
	p->l4_off = ETH_HLEN + hlen;
	__u16 frag = bpf_ntohs(ip->frag_off);
	if (frag & IP_OFFMASK) {
		p->frag = FRAG_LATER;
		return 0;
	}
	if (frag & IP_MF)
		p->frag = FRAG_FIRST;

	void *l4 = (void *)ip + hlen;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			return -1;
		p->tcp_flags = ((__u8 *)l4)[TCP_FLAGS_OFF];
		p->tcp_seq = bpf_ntohl(th->seq);
		p->tcp_ack = bpf_ntohl(th->ack_seq);
		p->tcp_win = bpf_ntohs(th->window);
	}
	if (parse_ports(l4, end, p->proto, &p->sport, &p->dport) < 0)
		return -1;
	if (p->proto != IPPROTO_ICMP)
		return 0;

	struct icmphdr *icmp = l4;
	p->icmp_type = icmp->type;
	if (!is_icmp_error(icmp->type))
		return 0;
	/* The quoted packet: its IP header and the first 8 bytes after it. */
	struct iphdr *inner = l4 + sizeof(struct icmphdr);
	if ((void *)(inner + 1) > end)
		return -1;
	__u32 ihlen = inner->ihl * 4;
	if (inner->version != 4 || ihlen < sizeof(*inner))
		return -1;
	p->inner_saddr = inner->saddr;
	p->inner_daddr = inner->daddr;
	p->inner_proto = inner->protocol;
	p->inner_off = p->l4_off + sizeof(struct icmphdr);
	p->inner_l4_off = p->inner_off + ihlen;
	if (parse_ports((void *)inner + ihlen, end, inner->protocol, &p->inner_sport, &p->inner_dport) < 0)
		return -1;
	p->has_inner = 1;
	return 0;
}

/*
 * IPv6.
 */

/* From RFC 4443. */
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

#define IPV6_HLEN 40
#define IPV6_MAX_EXT 6 /* extension headers walked before the verdict */

/* A parsed IPv6 packet: its addresses, the upper-layer protocol after the
 * extension headers and where it starts, and the fields of struct pkt
 * with the same names and meaning (ports, TCP, fragments, the packet an
 * ICMPv6 error quotes). */
struct pkt6 {
	struct in6_key saddr;
	struct in6_key daddr;
	__u32 l4_off;
	__u16 inner_off;
	__u16 inner_l4_off;
	__be32 ip_id;   /* the fragment header's identification (struct pkt's name) */
	__be16 sport;   /* ICMPv6 echo: the identifier */
	__be16 dport;
	__u8 proto;
	__u8 hop_limit;
	__u8 frag;      /* enum frag_kind */
	__u8 icmp_type; /* ICMPv6 with its header (not a later fragment) */
	__u8 tcp_flags;
	__u8 has_inner;
	__u8 inner_proto;
	__u8 pad;
	__u16 tcp_win;
	__u32 tcp_seq;
	__u32 tcp_ack;
	struct in6_key inner_saddr;
	struct in6_key inner_daddr;
	__be16 inner_sport;
	__be16 inner_dport;
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3, M flag in bit 0 */
	__be32 id;
};

static __always_inline int ip6_eq(const __be32 *a, const __be32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline int icmp6_error(__u8 type)
{
	return type >= ICMPV6_DEST_UNREACH && type <= ICMPV6_PARAMPROB;
}

/* read_ports6 reads the ports (ICMPv6 echo: the identifier as source port) of
 * the upper-layer header at off; -1 if it does not fit. */
static __always_inline int read_ports6(struct __sk_buff *skb, __u32 off, __u8 proto, __be16 *sport, __be16 *dport)
{
	__be16 h[4];
	*sport = 0;
	*dport = 0;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMPV6)
		return 0;
	if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
		return -1;
	if (proto != IPPROTO_ICMPV6) {
		*sport = h[0];
		*dport = h[1];
	} else if (*(__u8 *)h == ICMPV6_ECHO_REQUEST || *(__u8 *)h == ICMPV6_ECHO_REPLY) {
		*sport = h[2];
	}
	return 0;
}

/* parse_l4_6 reads the upper-layer header of a packet that has one. */
static __always_inline int parse_l4_6(struct __sk_buff *skb, struct pkt6 *p)
{
	if (read_ports6(skb, p->l4_off, p->proto, &p->sport, &p->dport) < 0)
		return -1;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr th;
		if (bpf_skb_load_bytes(skb, p->l4_off, &th, sizeof(th)) < 0)
			return -1;
		p->tcp_flags = ((__u8 *)&th)[TCP_FLAGS_OFF];
		p->tcp_seq = bpf_ntohl(th.seq);
		p->tcp_ack = bpf_ntohl(th.ack_seq);
		p->tcp_win = bpf_ntohs(th.window);
		return 0;
	}
	if (p->proto != IPPROTO_ICMPV6)
		return 0;
	if (bpf_skb_load_bytes(skb, p->l4_off, &p->icmp_type, 1) < 0)
		return -1;
	if (!icmp6_error(p->icmp_type))
		return 0;
	/* The quoted packet: its IPv6 header (extension headers in it are not
	 * walked) and the first 8 bytes after it. */
	struct ipv6hdr in;
	p->inner_off = p->l4_off + 8;
	p->inner_l4_off = p->inner_off + IPV6_HLEN;
	if (bpf_skb_load_bytes(skb, p->inner_off, &in, sizeof(in)) < 0 || in.version != 6)
		return -1;
	__builtin_memcpy(&p->inner_saddr, &in.saddr, 16);
	__builtin_memcpy(&p->inner_daddr, &in.daddr, 16);
	p->inner_proto = in.nexthdr;
	if (read_ports6(skb, p->inner_l4_off, in.nexthdr, &p->inner_sport, &p->inner_dport) < 0)
		return -1;
	p->has_inner = 1;
	return 0;
}

/* parse_ipv6 walks the IPv6 header and up to IPV6_MAX_EXT extension
 * headers (hop-by-hop, routing, destination options, fragment) to the
 * upper layer, and reads that. Returns -1 for a packet too short for its
 * headers, a bad version or more extension headers than that. */
static __always_inline int parse_ipv6(struct __sk_buff *skb, struct pkt6 *p)
{
	struct ipv6hdr ip6;
	__builtin_memset(p, 0, sizeof(*p));
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0 || ip6.version != 6)
		return -1;
	__builtin_memcpy(&p->saddr, &ip6.saddr, 16);
	__builtin_memcpy(&p->daddr, &ip6.daddr, 16);
	p->hop_limit = ip6.hop_limit;
	__u8 next = ip6.nexthdr;
	__u32 off = ETH_HLEN + sizeof(ip6);
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT; i++) {
		if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
			__u8 h[2];
			if (bpf_skb_load_bytes(skb, off, h, 2) < 0)
				return -1;
			next = h[0];
			off += (h[1] + 1) * 8;
		} else if (next == IPPROTO_FRAGMENT) {
			struct ipv6_frag_hdr fh;
			if (bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)) < 0)
				return -1;
			next = fh.nexthdr;
			off += sizeof(fh);
			p->ip_id = fh.id;
			__u16 fo = bpf_ntohs(fh.frag_off);
			if (fo & 0xfff8) {
				/* A later fragment: no upper-layer header here. */
				p->frag = FRAG_LATER;
				p->proto = next;
				p->l4_off = off;
				return 0;
			}
			if (fo & 1)
				p->frag = FRAG_FIRST;
		} else {
			p->proto = next;
			p->l4_off = off;
			return parse_l4_6(skb, p);
		}
	}
	return -1;
}

#endif
