#!/usr/bin/env bash
# A short bpfnet tour that runs entirely inside network namespaces it
# creates (a "host" namespace for the daemon and two containers) and
# removes them, and the daemon it starts, on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
id="demo-$$"
host="$id-host"; c1="$id-c1"; c2="$id-c2"
dir=$(mktemp -d)
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	ip netns exec "$host" ./bin/bpfnetd --state-dir "$dir/state" --cleanup >/dev/null 2>&1 || true
	for ns in "$c1" "$c2" "$host"; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$dir"
}
trap cleanup EXIT
for ns in "$host" "$c1" "$c2"; do ip netns add "$ns"; ip netns exec "$ns" ip link set lo up; done

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
ip netns exec "$host" ./bin/bpfnetd --state-dir "$dir/state" --socket "$dir/bpfnet.sock" --bip 198.18.0.1/24 >"$dir/log" 2>&1 &
pid=$!
export BPFNET_HOST="unix://$dir/bpfnet.sock"
for _ in $(seq 50); do ./bin/bpfnet status >/dev/null 2>&1 && break; sleep 0.1; done
step ./bin/bpfnet status
step ./bin/bpfnet network create --subnet 198.18.10.0/24 -o com.docker.network.bridge.enable_icc=false quiet-net
step ./bin/bpfnet network create --subnet 198.18.11.0/24 web
step ./bin/bpfnet endpoint create --network web --netns "/run/netns/$c1" --name web1
step ./bin/bpfnet endpoint create --network web --netns "/run/netns/$c2" --name web2
step ./bin/bpfnet endpoint ls
step ./bin/bpfnet locate --netns "/run/netns/$c1"
ip2=$(./bin/bpfnet endpoint inspect web2 | sed -n 's/.*"ip": "\(.*\)".*/\1/p')
step ip netns exec "$c1" ping -c 2 -W 1 "$ip2"
step ./bin/bpfnet network ls
step ./bin/bpfnet compat render
echo; echo "done: namespaces, daemon and rules are removed on exit"
