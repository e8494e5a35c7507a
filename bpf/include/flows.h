/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What one tenant may hold of the shared flow tables. Every connection-table
 * entry and every translation is charged to the endpoint it belongs to
 * (ep_flows, by traffic slot) and, for a connection from the outside to a
 * published port, to its remote source (remote_flows). A new flow over either
 * quota, or one that finds its table full, is refused (flow_limit); the
 * tables are plain hashes, so nothing live is ever evicted to make room.
 * Charges are released exactly once: by whichever CPU's delete of the
 * charged entry succeeds.
 */
#ifndef BPFNET_FLOWS_H
#define BPFNET_FLOWS_H

#include "maps.h"
#include "counters.h"

/* Entries one endpoint may hold (of MAX_FLOWS in each table). */
volatile const __u32 flows_per_endpoint = MAX_FLOWS / 4;
/* Connections to published ports one remote source may hold. */
volatile const __u32 flows_per_remote = MAX_FLOWS / 16;

/* stat_add adds d (which may be -1) to a stat of this CPU; a count that
 * goes up on one CPU and down on another still sums right (mod 2^64). */
static __always_inline void stat_add(__u32 s, __u64 d)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &s);
	if (v)
		*v += d;
}

/* charge charges one entry to endpoint slot; -1 (counted) when its quota
 * is used up. Slot 0 (no endpoint) is never charged. */
static __always_inline int charge(__u32 slot)
{
	if (!slot)
		return 0;
	__u32 *n = bpf_map_lookup_elem(&ep_flows, &slot);
	if (!n)
		return -1;
	if (*n >= flows_per_endpoint) {
		stat_inc(STAT_FLOW_LIMIT);
		return -1;
	}
	__sync_fetch_and_add(n, 1);
	return 0;
}

static __always_inline void uncharge(__u32 slot)
{
	if (!slot)
		return;
	__u32 *n = bpf_map_lookup_elem(&ep_flows, &slot);
	if (n && *n)
		__sync_fetch_and_add(n, (__u32)-1); /* XADD: what -mcpu=v1 has */
}

/* charge_remote charges one connection to remote source key in map
 * (remote_flows or remote_flows6); -1 (counted) when its quota is used
 * up. */
static __always_inline int charge_remote(void *map, const void *key)
{
	__u32 *n = bpf_map_lookup_elem(map, key);
	if (!n) {
		__u32 zero = 0;
		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		n = bpf_map_lookup_elem(map, key);
		if (!n)
			return 0; /* no room to count: the endpoint's quota still bounds it */
	}
	if (*n >= flows_per_remote) {
		stat_inc(STAT_FLOW_LIMIT);
		return -1;
	}
	__sync_fetch_and_add(n, 1);
	return 0;
}

static __always_inline void uncharge_remote(void *map, const void *key)
{
	__u32 *n = bpf_map_lookup_elem(map, key);
	if (n && *n)
		__sync_fetch_and_add(n, (__u32)-1); /* XADD: what -mcpu=v1 has */
}

/* table_full counts an insert refused for want of room. */
static __always_inline void table_full(void)
{
	stat_inc(STAT_FLOW_LIMIT);
}

#endif
