/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A small connection table for flows that containers start towards the
 * outside, so that replies (and ICMP errors about the flow) can be let in
 * while unsolicited traffic is not. Timeouts follow Linux conntrack's
 * defaults in spirit; they are knobs so tests can shorten them. A RST or
 * FIN from the outside is believed only inside the window the container
 * advertised (RFC 5961 §3), so a blind one cannot end a flow.
 */
#ifndef BPFNET_CONNTRACK_H
#define BPFNET_CONNTRACK_H

#include "maps.h"
#include "parse.h"
#include "flows.h"

#define SEC_NS 1000000000ULL
#define E_EXIST 17 /* EEXIST: the key is already there (BPF_NOEXIST) */

volatile const __u64 ct_timeout_tcp_syn = 120 * SEC_NS;       /* no reply yet */
volatile const __u64 ct_timeout_tcp_est = 432000 * SEC_NS;    /* established: 5 days */
volatile const __u64 ct_timeout_tcp_fin = 120 * SEC_NS;       /* after a FIN */
volatile const __u64 ct_timeout_tcp_rst = 10 * SEC_NS;        /* after a RST */
volatile const __u64 ct_timeout_udp = 30 * SEC_NS;            /* no reply yet */
volatile const __u64 ct_timeout_udp_stream = 120 * SEC_NS;    /* replied */
volatile const __u64 ct_timeout_other = 30 * SEC_NS;          /* ICMP and the rest */
/* How long an expired entry stays before the maintenance program removes
 * it. Until then a program that sees the flow again revives the entry in
 * place; the programs and the collector never both act on one entry. */
volatile const __u64 gc_grace = 30 * SEC_NS;

/* The flags of a TCP flow that is closing: its packets are never handled
 * by a shortcut that skips the close tracking. */
#define CT_F_ENDING (CT_F_FIN | CT_F_RST | CT_F_CLOSED)

static __always_inline __u64 ct_timeout(__u8 proto, __u32 flags)
{
	switch (proto) {
	case IPPROTO_TCP:
		if (flags & CT_F_RST)
			return ct_timeout_tcp_rst;
		if (flags & CT_F_FIN)
			return ct_timeout_tcp_fin;
		return (flags & CT_F_REPLIED) ? ct_timeout_tcp_est : ct_timeout_tcp_syn;
	case IPPROTO_UDP:
		return (flags & CT_F_REPLIED) ? ct_timeout_udp_stream : ct_timeout_udp;
	}
	return ct_timeout_other;
}

/* clock_ns is the clock of every timestamp the programs keep (connection
 * table, translations, fragments, peers, published-port flows):
 * CLOCK_MONOTONIC at tick resolution. Their timeouts are seconds, and the
 * precise clock costs a time-counter read on every call, several per
 * packet on the translation paths (TestProgramCost, docs/performance.md).
 * Drop events keep the precise clock. */
static __always_inline __u64 clock_ns(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* period_of names the period (2^30 ns, about a second) of clock_ns() now,
 * never 0. A translation's halves keep in `mark` the period in which
 * their packets last did the work a flow needs once a second, not on
 * every packet (untranslate, nat_refresh). The count wraps after 20
 * hours; only a flow live that long (TCP) can see its old mark again, and
 * it then skips one second's work. */
static __always_inline __u16 period_of(__u64 now)
{
	__u16 m = now >> 30;
	return m ? m : 1;
}

/* expired reports whether an entry last seen at `seen` has timed out at
 * `now`. Another CPU may have stamped the entry after this one read the
 * clock, so seen > now means "just seen", not a wrapped difference. */
static __always_inline int expired(__u64 now, __u64 seen, __u64 timeout)
{
	return now > seen && now - seen > timeout;
}

/* Window scale option parsing (RFC 7323 §2.2), one option per bpf_loop
 * step so the verifier checks the step once. */
struct wscale_scan {
	__u8 opts[40];
	__u32 pos;
	__u32 len;
	__u8 shift;
};

static long wscale_step(__u32 i, void *data)
{
	struct wscale_scan *s = data;
	__u32 pos = s->pos;
	if (pos >= s->len || pos >= 38)
		return 1;
	__u8 kind = s->opts[pos];
	if (kind == 0) /* end of options */
		return 1;
	if (kind == 1) { /* no-op */
		s->pos = pos + 1;
		return 0;
	}
	__u8 len = s->opts[pos + 1];
	if (len < 2)
		return 1;
	if (kind == 3 && len == 3) {
		__u8 shift = s->opts[pos + 2];
		s->shift = shift > 14 ? 14 : shift;
		return 1;
	}
	s->pos = pos + len;
	return 0;
}

#define FAMILY 4
#include "conntrack_family.h"
#undef FAMILY
#define FAMILY 6
#include "conntrack_family.h"
#undef FAMILY

#endif
