/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking, translation and their collection are written once
 * for both IP versions, in the *_family.h headers: each is included twice,
 * after `#define FAMILY 4` and after `#define FAMILY 6`, and this header
 * (which they include first) gives the names and types of that version:
 *
 *   F(name)   the function or type name: name for IPv4, name##6 for IPv6
 *   PKT       the parsed packet (struct pkt, struct pkt6: same field names)
 *   TUPLE     the key of the flow maps; ADDR its address type
 *   NAT       the value of nat_fwd/nat_rev
 *   CT_MAP, FWD_MAP, REV_MAP, EP_MAP, REMOTE_MAP   the version's maps
 *   ADDR_EQ(a, b), ADDR_SET(a)   address comparison and "not zero"
 *   ICMP_PROTO, ECHO_REQUEST, ECHO_REPLY   ICMP or ICMPv6
 *   GC_ADDR(c)   the address a purge removes (struct gc_ctx)
 *   BACKEND      the value of ports/ports6
 *   FRAG_KEY, FRAG_ENTRY, PEER_KEY, PEER_ENTRY, FRAGS_MAP, PEERS_MAP
 *                fragments followed (frags.h)
 *   ADDR_NONE    the zero address ("none")
 *
 * No include guard: it redefines its names on every inclusion.
 */
#undef F
#undef PKT
#undef TUPLE
#undef ADDR
#undef NAT
#undef CT_MAP
#undef FWD_MAP
#undef REV_MAP
#undef EP_MAP
#undef REMOTE_MAP
#undef ADDR_EQ
#undef ADDR_SET
#undef ICMP_PROTO
#undef ECHO_REQUEST
#undef ECHO_REPLY
#undef GC_ADDR
#undef BACKEND
#undef FRAG_KEY
#undef FRAG_ENTRY
#undef PEER_KEY
#undef PEER_ENTRY
#undef FRAGS_MAP
#undef PEERS_MAP
#undef ADDR_NONE

#if FAMILY == 4
#define F(name) name
#define PKT struct pkt
#define TUPLE struct tuple
#define ADDR __be32
#define NAT struct nat_entry
#define CT_MAP conntrack
#define FWD_MAP nat_fwd
#define REV_MAP nat_rev
#define EP_MAP ep_by_ip
#define REMOTE_MAP remote_flows
#define ADDR_EQ(x, y) ((x) == (y))
#define ADDR_SET(x) ((x) != 0)
#define ICMP_PROTO IPPROTO_ICMP
#define ECHO_REQUEST ICMP_ECHO
#define ECHO_REPLY ICMP_ECHOREPLY
#define GC_ADDR(c) ((c)->addr)
#define BACKEND struct port_backend
#define FRAG_KEY struct frag_key
#define FRAG_ENTRY struct frag_entry
#define PEER_KEY struct peer_key
#define PEER_ENTRY struct peer_entry
#define FRAGS_MAP frags
#define PEERS_MAP peers
#define ADDR_NONE 0
#elif FAMILY == 6
#define F(name) name##6
#define PKT struct pkt6
#define TUPLE struct tuple6
#define ADDR struct in6_key
#define NAT struct nat_entry6
#define CT_MAP conntrack6
#define FWD_MAP nat_fwd6
#define REV_MAP nat_rev6
#define EP_MAP ep_by_ip6
#define REMOTE_MAP remote_flows6
#define ADDR_EQ(x, y) ip6_eq((x).a, (y).a)
#define ADDR_SET(x) (((x).a[0] | (x).a[1] | (x).a[2] | (x).a[3]) != 0)
#define ICMP_PROTO IPPROTO_ICMPV6
#define ECHO_REQUEST ICMPV6_ECHO_REQUEST
#define ECHO_REPLY ICMPV6_ECHO_REPLY
#define GC_ADDR(c) ((c)->addr6)
#define BACKEND struct port_backend6
#define FRAG_KEY struct frag_key6
#define FRAG_ENTRY struct frag_entry6
#define PEER_KEY struct peer_key6
#define PEER_ENTRY struct peer_entry6
#define FRAGS_MAP frags6
#define PEERS_MAP peers6
#define ADDR_NONE ((struct in6_key){})
#else
#error "FAMILY must be 4 or 6"
#endif
