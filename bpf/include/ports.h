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

/* ep_addr is the endpoint's address of the version (ports_family.h). */
static __always_inline __be32 ep_addr(const struct endpoint_info *ep)
{
	return ep->ip;
}

static __always_inline struct in6_key ep_addr6(const struct endpoint_info *ep)
{
	struct in6_key k;
	__builtin_memcpy(&k, ep->ip6, sizeof(k));
	return k;
}

#define FAMILY 4
#include "ports_family.h"
#undef FAMILY
#define FAMILY 6
#include "ports_family.h"
#undef FAMILY

#endif
