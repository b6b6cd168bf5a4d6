#!/usr/bin/env bash
# A scripted conversation: a server on a free port, a --follow listener
# piped through grep, and two batch clients talking to each other.
set -euo pipefail
cd "$(dirname "$0")/.."
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

# The server reads its console from a FIFO so that it keeps running.
mkfifo "$work/console"
sleep 600 > "$work/console" &
pids+=($!)
"$bin/chat-server" 0 --bind 127.0.0.1 < "$work/console" > "$work/server.out" 2> "$work/server.log" &
pids+=($!)
for _ in $(seq 100); do
    grep -q '^listening on' "$work/server.out" 2>/dev/null && break
    sleep 0.05
done
port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/server.out")
echo "server listening on port $port"

# carol listens and keeps only what bob says.
"$bin/chat-client" 127.0.0.1 "$port" carol --follow < /dev/null 2> /dev/null \
    | grep --line-buffered '^bob:' > "$work/carol.out" &
pids+=($!)
sleep 0.3

# bob and alice are batch clients fed by slow pipes, so both are online at
# once; alice answers bob with `reply`, then tries someone who is not there.
{
    sleep 0.3
    echo 'send carol good morning, carol'
    echo 'send alice morning alice, lunch at noon?'
    sleep 1.5
} | "$bin/chat-client" 127.0.0.1 "$port" bob > "$work/bob.out" 2>&1 &
bob=$!
{
    sleep 0.3
    echo 'send carol hi carol, alice here'
    sleep 0.6
    echo 'reply noon works'
    echo '# dave never logged in:'
    echo 'send dave are you there?'
} | "$bin/chat-client" 127.0.0.1 "$port" alice > "$work/alice.out" 2>&1 || echo "(alice exited with status $?)"
wait "$bob" || true
sleep 0.2

for who in alice bob; do
    echo "--- what $who saw"
    cat "$work/$who.out"
done
echo "--- what carol's listener kept (| grep '^bob:')"
cat "$work/carol.out"
