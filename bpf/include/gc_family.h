/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maintenance program's callbacks (gc.h) for one IP version
 * (family.h): gc.h includes it for IPv4 and IPv6. No include guard.
 */
#include "family.h"

static __always_inline int F(gc_old)(const struct gc_ctx *c, const TUPLE *k, __u64 seen, __u32 flags)
{
	return c->mode == GC_EXPIRED && expired(c->now, seen, ct_timeout(k->proto, flags & 0xffff) + gc_grace);
}

static long F(gc_fwd)(struct bpf_map *map, TUPLE *k, NAT *f, struct gc_ctx *c)
{
	/* The endpoint's own flows and published-port connections (it is the
	 * key's source), and hairpin connections it started (their replies go
	 * to it). */
	int purge = c->mode == GC_PURGE && (ADDR_EQ(k->saddr, GC_ADDR(c)) || ADDR_EQ(k->daddr, GC_ADDR(c)));
	if ((purge || F(gc_old)(c, k, f->last_seen, f->flags)) && F(nat_pair_delete)(k, f))
		c->removed++;
	return 0;
}

static long F(gc_rev)(struct bpf_map *map, TUPLE *r, NAT *e, struct gc_ctx *c)
{
	/* Reply halves whose forward half is gone, the host's flows, and the
	 * endpoint's hairpin connections (it is the key's source). */
	int purge = c->mode == GC_PURGE && (ADDR_EQ(e->addr, GC_ADDR(c)) || ADDR_EQ(r->saddr, GC_ADDR(c)));
	if ((purge || F(gc_old)(c, r, e->last_seen, e->flags)) && bpf_map_delete_elem(&REV_MAP, r) == 0)
		c->removed++;
	return 0;
}

static long F(gc_ct)(struct bpf_map *map, TUPLE *k, struct ct_entry *e, struct gc_ctx *c)
{
	int purge = c->mode == GC_PURGE && (ADDR_EQ(k->saddr, GC_ADDR(c)) || ADDR_EQ(k->daddr, GC_ADDR(c)));
	if ((purge || F(gc_old)(c, k, e->last_seen, e->flags)) && F(ct_delete)(k, e->slot))
		c->removed++;
	return 0;
}

static long F(gc_frag)(struct bpf_map *map, FRAG_KEY *k, FRAG_ENTRY *e, struct gc_ctx *c)
{
	if (ADDR_EQ(k->saddr, GC_ADDR(c)) || ADDR_EQ(k->daddr, GC_ADDR(c)) || ADDR_EQ(e->new_saddr, GC_ADDR(c)) ||
	    ADDR_EQ(e->new_daddr, GC_ADDR(c)))
		bpf_map_delete_elem(&FRAGS_MAP, k);
	return 0;
}

static long F(gc_peer)(struct bpf_map *map, PEER_KEY *k, PEER_ENTRY *e, struct gc_ctx *c)
{
	if (ADDR_EQ(k->local, GC_ADDR(c)) || ADDR_EQ(e->container, GC_ADDR(c)))
		bpf_map_delete_elem(&PEERS_MAP, k);
	return 0;
}
