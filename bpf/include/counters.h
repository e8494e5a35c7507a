/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-endpoint counters: packets and bytes per direction (traffic), drops
 * by reason (drops). */
#ifndef BPFNET_COUNTERS_H
#define BPFNET_COUNTERS_H

#include <linux/pkt_cls.h>
#include "maps.h"
#include "parse.h"

/* Drop events each CPU may send per second (0: none). */
volatile const __u32 events_per_sec = 1000;

#define PASS 0xff /* verdict: no drop reason */

static __always_inline void stat_inc(__u32 s)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &s);
	if (v)
		*v += 1;
}

/* emit sends a drop event, within this CPU's budget. */
static __always_inline void emit(__u32 ifindex, __u32 dir, __u32 reason, const struct pkt *p)
{
	if (!events_per_sec)
		return;
	__u32 zero = 0;
	struct event_budget *b = bpf_map_lookup_elem(&ev_budget, &zero);
	if (!b)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u64 second = now / 1000000000ULL;
	if (b->second != second) {
		b->second = second;
		b->used = 0;
	}
	if (b->used >= events_per_sec) {
		stat_inc(STAT_EVENTS_SUPPRESSED);
		return;
	}
	b->used++;
	struct drop_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		stat_inc(STAT_EVENTS_LOST);
		return;
	}
	e->ts = now;
	e->ifindex = ifindex;
	e->dir = dir;
	e->reason = reason;
	e->pad = 0;
	if (p) {
		e->proto = p->proto;
		e->saddr = p->saddr;
		e->daddr = p->daddr;
		e->sport = p->sport;
		e->dport = p->dport;
	} else {
		e->proto = 0;
		e->saddr = 0;
		e->daddr = 0;
		e->sport = 0;
		e->dport = 0;
	}
	bpf_ringbuf_submit(e, 0);
}

/* count counts a packet of the endpoint with counter slot `slot`. */
static __always_inline void count(__u32 slot, __u32 dir, __u32 len)
{
	__u32 k = slot * 2 + dir;
	struct traffic_counts *t = bpf_map_lookup_elem(&traffic, &k);
	if (t) {
		t->packets++;
		t->bytes += len;
	}
}

/* drop_pkt counts a drop (and sends its event) and returns TC_ACT_SHOT;
 * p, when not NULL, is the parsed packet. */
static __always_inline int drop_pkt(__u32 ifindex, __u32 dir, __u32 reason, const struct pkt *p)
{
	struct drop_key k = {.ifindex = ifindex, .dir = dir};
	struct drop_counts *c = bpf_map_lookup_elem(&drops, &k);
	if (!c) {
		struct drop_counts zero = {};
		bpf_map_update_elem(&drops, &k, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&drops, &k);
	}
	if (c && reason < REASON_MAX)
		c->reasons[reason]++;
	emit(ifindex, dir, reason, p);
	return TC_ACT_SHOT;
}

static __always_inline int drop(__u32 ifindex, __u32 dir, __u32 reason)
{
	return drop_pkt(ifindex, dir, reason, 0);
}

#endif
