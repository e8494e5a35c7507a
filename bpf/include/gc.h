/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maintenance program. The daemon runs it (BPF_PROG_TEST_RUN) with
 * gc_args set: every 30 seconds to remove entries expired for longer than
 * gc_grace (GC_EXPIRED), and when an endpoint goes to remove every entry
 * that refers to its address (GC_PURGE), so that no translation outlives
 * its endpoint or follows its address to the next one. It works inside the
 * kernel, one entry at a time (bpf_for_each_map_elem): an entry is checked
 * and removed in one step, with its charge released, never from a stale
 * list of keys.
 */
#ifndef BPFNET_GC_H
#define BPFNET_GC_H

#include "maps.h"
#include "conntrack.h"
#include "nat.h"

struct bpf_map; /* the callbacks' first argument; unused */

struct gc_ctx {
	__u64 now;
	__u32 mode;
	__be32 addr;
	__u64 removed;
};

static __always_inline int gc_old(const struct gc_ctx *c, const struct tuple *k, __u64 seen, __u32 flags)
{
	return c->mode == GC_EXPIRED && expired(c->now, seen, ct_timeout(k, flags & 0xffff) + gc_grace);
}

static long gc_fwd(struct bpf_map *map, struct tuple *k, struct nat_entry *f, struct gc_ctx *c)
{
	/* The endpoint's own flows and published-port connections (it is the
	 * key's source), and hairpin connections it started (their replies go
	 * to it). */
	int purge = c->mode == GC_PURGE && (k->saddr == c->addr || k->daddr == c->addr);
	if ((purge || gc_old(c, k, f->last_seen, f->flags)) && nat_pair_delete(k, f))
		c->removed++;
	return 0;
}

static long gc_rev(struct bpf_map *map, struct tuple *r, struct nat_entry *e, struct gc_ctx *c)
{
	/* Reply halves whose forward half is gone, the host's flows, and the
	 * endpoint's hairpin connections (it is the key's source). */
	int purge = c->mode == GC_PURGE && (e->addr == c->addr || r->saddr == c->addr);
	if ((purge || gc_old(c, r, e->last_seen, e->flags)) && bpf_map_delete_elem(&nat_rev, r) == 0)
		c->removed++;
	return 0;
}

static long gc_ct(struct bpf_map *map, struct tuple *k, struct ct_entry *e, struct gc_ctx *c)
{
	int purge = c->mode == GC_PURGE && (k->saddr == c->addr || k->daddr == c->addr);
	if ((purge || gc_old(c, k, e->last_seen, e->flags)) && ct_delete(k, e->slot))
		c->removed++;
	return 0;
}

static long gc_frag(struct bpf_map *map, struct frag_key *k, struct frag_entry *e, struct gc_ctx *c)
{
	if (k->saddr == c->addr || k->daddr == c->addr || e->new_saddr == c->addr || e->new_daddr == c->addr)
		bpf_map_delete_elem(&frags, k);
	return 0;
}

static long gc_peer(struct bpf_map *map, struct peer_key *k, struct peer_entry *e, struct gc_ctx *c)
{
	if (k->local == c->addr || e->container == c->addr)
		bpf_map_delete_elem(&peers, k);
	return 0;
}

static long gc_sock(struct bpf_map *map, struct sock_key *k, struct sock_orig *o, struct gc_ctx *c)
{
	if (k->addr == c->addr)
		bpf_map_delete_elem(&sock_rev, k);
	return 0;
}

SEC("tc")
int maintain(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct gc_args *a = bpf_map_lookup_elem(&gc_args, &zero);
	if (!a)
		return TC_ACT_OK;
	struct gc_ctx c = {.now = bpf_ktime_get_ns(), .mode = a->mode, .addr = a->addr};
	if (c.mode == GC_PURGE && !c.addr)
		return TC_ACT_OK;
	bpf_for_each_map_elem(&nat_fwd, gc_fwd, &c, 0);
	bpf_for_each_map_elem(&nat_rev, gc_rev, &c, 0);
	bpf_for_each_map_elem(&conntrack, gc_ct, &c, 0);
	if (c.mode == GC_PURGE) {
		bpf_for_each_map_elem(&frags, gc_frag, &c, 0);
		bpf_for_each_map_elem(&peers, gc_peer, &c, 0);
		bpf_for_each_map_elem(&sock_rev, gc_sock, &c, 0);
	}
	a->removed = c.removed;
	return TC_ACT_OK;
}

#endif
