#!/usr/bin/env bash
# A short bpfnet tour that runs entirely inside network namespaces it
# creates: a "host" namespace shaped like a real host (an uplink with a
# default route into an "outside" namespace, which leads nowhere else), two
# containers, and the daemon started with its defaults. It removes the
# namespaces and the daemon it started on exit.
#
# BPFNET_BIN is the directory of bpfnetd and bpfnet (default ./bin, what
# `make build` makes); DEMO_ID names the namespaces ($DEMO_ID-host, ...;
# default demo-PID).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BPFNET_BIN:-./bin}
id=${DEMO_ID:-demo-$$}
host="$id-host"; out="$id-out"; c1="$id-c1"; c2="$id-c2"
dir=$(mktemp -d)
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	ip netns exec "$host" "$bin/bpfnetd" --state-dir "$dir/state" --socket "$dir/bpfnet.sock" --docker-plugin "$dir/docker-plugin.sock" --cleanup >/dev/null 2>&1 || true
	for ns in "$c1" "$c2" "$host" "$out"; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$dir"
}
trap cleanup EXIT
for ns in "$host" "$out" "$c1" "$c2"; do ip netns add "$ns"; ip netns exec "$ns" ip link set lo up; done
# The host's uplink: 198.19.0.1 on eth0, default route via the outside.
ip -n "$host" link add eth0 type veth peer name eth0 netns "$out"
ip -n "$host" addr add 198.19.0.1/24 dev eth0
ip -n "$host" link set eth0 up
ip -n "$host" route add default via 198.19.0.2
ip -n "$out" addr add 198.19.0.2/24 dev eth0
ip -n "$out" link set eth0 up

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
# What `make run` runs, plus a state dir and sockets of the demo's own (the
# Docker driver's too: the host's /run/docker is no business of a demo).
ip netns exec "$host" "$bin/bpfnetd" --state-dir "$dir/state" --socket "$dir/bpfnet.sock" --docker-plugin "$dir/docker-plugin.sock" >"$dir/log" 2>&1 &
pid=$!
export BPFNET_HOST="unix://$dir/bpfnet.sock"
for _ in $(seq 100); do [ -S "$dir/bpfnet.sock" ] && break; kill -0 "$pid" 2>/dev/null || { cat "$dir/log"; exit 1; }; sleep 0.1; done
b() { ip netns exec "$host" "$bin/bpfnet" "$@"; }
step b status
step b network create -o com.docker.network.bridge.enable_icc=false quiet-net
step b network create web
step b endpoint create --network web --netns "/run/netns/$c1" --name web1
step b endpoint create --network web --netns "/run/netns/$c2" --name web2
step b endpoint ls
step b locate --netns "/run/netns/$c1"
ip2=$(b endpoint inspect --format '{{.IP}}' web2)
step ip netns exec "$c1" ping -c 2 -W 1 "$ip2"
step ip netns exec "$c1" ping -c 2 -W 1 198.19.0.2
step b nat ls
step b network ls
step b compat render
echo; echo "done: namespaces, daemon and rules are removed on exit"
