/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maintenance program. The daemon runs it (BPF_PROG_TEST_RUN) with
 * gc_args set: every 30 seconds to remove entries expired for longer than
 * gc_grace (GC_EXPIRED), and when an endpoint goes to remove every entry
 * that refers to its address (GC_PURGE: its IPv4 and IPv6 addresses), so that no translation outlives
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
	struct in6_key addr6;
};

#define FAMILY 4
#include "gc_family.h"
#undef FAMILY
#define FAMILY 6
#include "gc_family.h"
#undef FAMILY

static long gc_sock6(struct bpf_map *map, struct sock_key6 *k, struct sock_orig6 *o, struct gc_ctx *c)
{
	if (ip6_eq(k->addr.a, c->addr6.a))
		bpf_map_delete_elem(&sock_rev6, k);
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
	struct gc_ctx c = {.now = clock_ns(), .mode = a->mode, .addr = a->addr, .addr6 = a->addr6};
	int purge = c.mode == GC_PURGE;
	if (!purge || c.addr) {
		bpf_for_each_map_elem(&nat_fwd, gc_fwd, &c, 0);
		bpf_for_each_map_elem(&nat_rev, gc_rev, &c, 0);
		bpf_for_each_map_elem(&conntrack, gc_ct, &c, 0);
	}
	if (!purge || (c.addr6.a[0] | c.addr6.a[1] | c.addr6.a[2] | c.addr6.a[3])) {
		bpf_for_each_map_elem(&nat_fwd6, gc_fwd6, &c, 0);
		bpf_for_each_map_elem(&nat_rev6, gc_rev6, &c, 0);
		bpf_for_each_map_elem(&conntrack6, gc_ct6, &c, 0);
		if (purge) {
			bpf_for_each_map_elem(&frags6, gc_frag6, &c, 0);
			bpf_for_each_map_elem(&peers6, gc_peer6, &c, 0);
			bpf_for_each_map_elem(&sock_rev6, gc_sock6, &c, 0);
		}
	}
	if (purge && c.addr) {
		bpf_for_each_map_elem(&frags, gc_frag, &c, 0);
		bpf_for_each_map_elem(&peers, gc_peer, &c, 0);
		bpf_for_each_map_elem(&sock_rev, gc_sock, &c, 0);
	}
	a->removed = c.removed;
	return TC_ACT_OK;
}

#endif
