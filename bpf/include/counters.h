/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-endpoint counters: packets and bytes per direction, drops by reason. */
#ifndef BPFNET_COUNTERS_H
#define BPFNET_COUNTERS_H

#include <linux/pkt_cls.h>
#include "maps.h"

static __always_inline struct counter_values *counters_of(__u32 ifindex, __u32 dir)
{
	struct counter_key k = {.ifindex = ifindex, .dir = dir};
	struct counter_values *c = bpf_map_lookup_elem(&counters, &k);
	if (c)
		return c;
	struct counter_values zero = {};
	bpf_map_update_elem(&counters, &k, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&counters, &k);
}

static __always_inline void count(__u32 ifindex, __u32 dir, __u32 len)
{
	struct counter_values *c = counters_of(ifindex, dir);
	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

static __always_inline int drop(__u32 ifindex, __u32 dir, __u32 reason)
{
	struct counter_values *c = counters_of(ifindex, dir);
	if (c && reason < REASON_MAX)
		c->drops[reason]++;
	return TC_ACT_SHOT;
}

#endif
