#!/usr/bin/env bash
# Three chat-server nodes acting as one server through Redis: a redis-server
# of its own on a free port (persistence off), three nodes with --cluster,
# a --follow listener on the third, and batch clients on the first two.
# Shows messages crossing nodes, one namespace and `who` across nodes.
# Needs redis-server (the Debian package: apt-get install -y redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server > /dev/null || {
    echo "redis-server not found: apt-get install -y redis-server" >&2
    exit 1
}
cargo build --quiet --bin chat-server --bin chat-client
bin=target/debug
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no > "$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping > /dev/null 2>&1 && break
    sleep 0.05
done
echo "redis-server on port $redis_port"

ports=()
for node in 1 2 3; do
    "$bin/chat-server" 0 --bind 127.0.0.1 --cluster "redis://127.0.0.1:$redis_port" \
        < /dev/null > "$work/node$node.out" 2> "$work/node$node.log" &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q '^listening on' "$work/node$node.out" 2>/dev/null && break
        sleep 0.05
    done
    ports+=("$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/node$node.out")")
    echo "node $node listening on port ${ports[-1]}"
done

# carol listens on node 3.
"$bin/chat-client" 127.0.0.1 "${ports[2]}" carol --follow < /dev/null > "$work/carol.out" 2> /dev/null &
pids+=($!)
sleep 0.5

echo
echo "alice (node 1) and bob (node 2) write to carol (node 3):"
printf 'send carol hello from node 1\n' | "$bin/chat-client" 127.0.0.1 "${ports[0]}" alice
printf 'send carol hello from node 2\nwho\n' | "$bin/chat-client" 127.0.0.1 "${ports[1]}" bob \
    | sed 's/^/  bob sees online: /'
echo
echo "a second carol, on node 1, is refused: one namespace across nodes"
printf 'send alice hi\n' | "$bin/chat-client" 127.0.0.1 "${ports[0]}" carol 2>&1 | sed 's/^/  /' || true
echo
echo "someone nobody holds, on any node:"
printf 'send dave are you there\n' | "$bin/chat-client" 127.0.0.1 "${ports[0]}" alice 2>&1 | sed 's/^/  /' || true
sleep 0.3
echo
echo "carol's output on node 3:"
sed 's/^/  /' "$work/carol.out"
echo
echo "names held in Redis:"
redis-cli -p "$redis_port" --scan --pattern 'pmchat:name:*' | sort | sed 's/^/  /'
