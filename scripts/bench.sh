#!/usr/bin/env bash
# The standard benchmark suite: builds in release mode, starts a fresh
# chat-server per case on a free port (quiet log level), runs chat-bench
# against it on this machine, stops it, and prints a Markdown table.
#
#   scripts/bench.sh            # the whole suite (a few minutes)
#   LATENCY_SECONDS=10 scripts/bench.sh    # longer latency runs (default 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."

latency_seconds=${LATENCY_SECONDS:-5}
cargo build --release --quiet --bins
bin=target/release
work=$(mktemp -d)
server_pid=
console_pid=

cleanup() {
    stop_server
    stop_cluster
    rm -rf "$work"
}
trap cleanup EXIT

start_server() {
    rm -f "$work/console" "$work/server.out"
    mkfifo "$work/console"
    # Keep the console open so that the server keeps running.
    sleep 3600 > "$work/console" &
    console_pid=$!
    "$bin/chat-server" 0 --bind 127.0.0.1 -q --max-clients 100000 "$@" \
        < "$work/console" > "$work/server.out" 2> "$work/server.log" &
    server_pid=$!
    port=$(listening_port "$work/server.out" "$work/server.log")
}

# listening_port OUT LOG: waits for a chat-server's `listening on` line in
# OUT and prints its port; fails with LOG if it never comes.
listening_port() {
    for _ in $(seq 200); do
        grep -q '^listening on' "$1" 2>/dev/null && break
        sleep 0.05
    done
    local found
    found=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$1")
    [ -n "$found" ] || { echo "server did not start" >&2; cat "$2" >&2; exit 1; }
    echo "$found"
}

stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
    if [ -n "$console_pid" ]; then
        kill "$console_pid" 2>/dev/null || true
        wait "$console_pid" 2>/dev/null || true
        console_pid=
    fi
}

# cpu_seconds PID: user+system CPU time of a process, from /proc.
cpu_seconds() {
    awk -v tck="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / tck }' "/proc/$1/stat"
}

rss_mib() {
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# json FILE KEY: one field of chat-bench's JSON line.
json() {
    python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}

rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }
fmt() { python3 -c 'import sys; print(format(float(sys.argv[1]), sys.argv[2]))' "$1" "$2"; }

# Extra server options for the cases that follow (TLS).
server_args=()
# Extra chat-bench options for the cases that follow (the cluster's).
bench_args=()
# Set by start_cluster: a redis-server of the suite's own and a second node
# (the receivers' in the cross-node cases); the measured node is the one
# start_server starts, with --cluster.
redis_pid=
redis_port=
node_b_pid=
node_b_port=

start_cluster() {
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no > "$work/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 200); do
        redis-cli -p "$redis_port" ping > /dev/null 2>&1 && break
        sleep 0.05
    done
    "$bin/chat-server" 0 --bind 127.0.0.1 -q --max-clients 100000 --cluster "redis://127.0.0.1:$redis_port" \
        < /dev/null > "$work/node-b.out" 2> "$work/node-b.log" &
    node_b_pid=$!
    node_b_port=$(listening_port "$work/node-b.out" "$work/node-b.log")
}

stop_cluster() {
    for pid in $node_b_pid $redis_pid; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    node_b_pid=
    redis_pid=
}

# When set (nats or redis), `bench` starts that server instead of
# chat-server and drives it with the same workload (chat-bench --peer).
peer=

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_peer() {
    port=$(free_port)
    case $peer in
        nats) nats-server -p "$port" -a 127.0.0.1 > "$work/peer.log" 2>&1 & ;;
        redis) redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
                   > "$work/peer.log" 2>&1 & ;;
    esac
    server_pid=$!
    for _ in $(seq 200); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.1)' \
            "$port" 2> /dev/null && return
        sleep 0.05
    done
    echo "$peer did not start" >&2; cat "$work/peer.log" >&2; exit 1
}

bench() {
    local name=$1; shift
    echo "== $name" >&2
    if [ -n "$peer" ]; then
        start_peer
        "$bin/chat-bench" "$@" --peer "$peer" --addr "127.0.0.1:$port" --pid "$server_pid" > "$work/result.json"
        stop_server
        return
    fi
    start_server "${server_args[@]}"
    local redis_cpu0=0
    [ -n "$redis_pid" ] && redis_cpu0=$(cpu_seconds "$redis_pid")
    "$bin/chat-bench" "$@" "${bench_args[@]}" --addr "127.0.0.1:$port" --pid "$server_pid" > "$work/result.json"
    if [ -n "$redis_pid" ]; then
        # Redis's CPU for the run, in the result for the row to show.
        python3 -c 'import json,sys; f=sys.argv[1]; d=json.load(open(f)); d["redis_cpu_s"]=float(sys.argv[2]); json.dump(d, open(f, "w"))' \
            "$work/result.json" "$(python3 -c "print($(cpu_seconds "$redis_pid") - $redis_cpu0)")"
    fi
    stop_server
}

# Runs on two shared cores swing (throughput by ±10%; latency with how
# deeply idle vCPUs sleep between messages), so each throughput and latency
# case runs three times (a fresh server each).
# three_runs NAME CASE KEY ARGS...: sets `runs` to the runs' result files,
# sorted by KEY, so that ${runs[1]} is the median run.
three_runs() {
    local name=$1 case=$2 key=$3; shift 3
    runs=()
    for i in 1 2 3; do
        bench "$name (run $i)" "$case" "$@"
        cp "$work/result.json" "$work/$case-$i.json"
        runs+=("$work/$case-$i.json")
    done
    mapfile -t runs < <(python3 -c 'import json,sys; [print(f) for f in sorted(sys.argv[2:], key=lambda f: json.load(open(f))[sys.argv[1]])]' "$key" "${runs[@]}")
}

# range KEY SCALE FORMAT FILES...: "lowest-highest" of KEY / SCALE.
range() {
    python3 -c 'import json,sys; v=sorted(json.load(open(f))[sys.argv[1]] / float(sys.argv[2]) for f in sys.argv[4:]); print(format(v[0], sys.argv[3]) + "-" + format(v[-1], sys.argv[3]))' "$@"
}

throughput() {
    local name=$1; shift
    three_runs "$name" throughput msgs_per_s "$@"
    local r=${runs[1]}
    row "$name" "$(fmt "$(json "$r" msgs_per_s)" ',.0f') msgs/s ($(fmt "$(json "$r" mb_per_s)" ',.0f') MB/s); 3 runs: $(range msgs_per_s 1e6 .2f "${runs[@]}") M" \
        "" "$(fmt "$(json "$r" server_cpu_s)" .2f)" \
        "$(fmt "$(json "$r" bench_cpu_s)" .2f)" "$(fmt "$(( $(json "$r" server_rss_kib) ))" ',.0f') KiB"
}

latency() {
    local name=$1; shift
    three_runs "$name" latency p99_us "$@"
    local r=${runs[1]}
    row "$name" "$(fmt "$(json "$r" achieved_rate)" ',.0f') msgs/s, lost $(json "$r" lost); p99 over 3 runs: $(range p99_us 1 .0f "${runs[@]}") µs" \
        "$(fmt "$(json "$r" p50_us)" .0f) / $(fmt "$(json "$r" p99_us)" .0f) / $(fmt "$(json "$r" p999_us)" .0f) µs" \
        "$(fmt "$(json "$r" server_cpu_s)" .2f)" "$(fmt "$(json "$r" bench_cpu_s)" .2f)" \
        "$(fmt "$(( $(json "$r" server_rss_kib) ))" ',.0f') KiB"
}

conns() {
    local name=$1 count=$2; shift 2
    bench "$name" conns --count "$count" "$@"
    local r="$work/result.json"
    row "$name" "$(fmt "$(json "$r" bytes_per_conn)" ',.0f') bytes/conn, RSS $(fmt "$(json "$r" rss_held_kib)" ',.0f') → $(fmt "$(json "$r" rss_after_kib)" ',.0f') KiB after" \
        "" "$(fmt "$(json "$r" server_cpu_s)" .2f)" "$(fmt "$(json "$r" bench_cpu_s)" .2f)" \
        "$(fmt "$(json "$r" rss_held_kib)" ',.0f') KiB"
}

batch_client() {
    local lines=1000000
    echo "== batch client, $lines lines" >&2
    awk -v n=$lines 'BEGIN { for (i = 0; i < n; i++) printf "send bob message number %d\n", i }' > "$work/script.txt"
    start_server
    "$bin/chat-client" 127.0.0.1 "$port" bob --follow < /dev/null > "$work/bob.out" 2>/dev/null &
    local follower=$!
    sleep 0.5
    local cpu0 t0 t1 ta count status=0
    cpu0=$(cpu_seconds "$server_pid")
    t0=$(date +%s.%N)
    # With receipts (the server grants them) the client exits as soon as
    # every line is accounted for, with status 0 only if all were accepted.
    "$bin/chat-client" 127.0.0.1 "$port" alice < "$work/script.txt" || status=$?
    ta=$(date +%s.%N)
    for _ in $(seq 3000); do
        count=$(wc -l < "$work/bob.out")
        [ "$count" -ge "$lines" ] && break
        sleep 0.01
    done
    t1=$(date +%s.%N)
    local cpu rss seconds accounted
    cpu=$(python3 -c "print(f'{$(cpu_seconds "$server_pid") - $cpu0:.2f}')")
    rss=$(rss_mib "$server_pid")
    seconds=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
    accounted=$(python3 -c "print(f'{$ta - $t0:.2f}')")
    kill "$follower" 2>/dev/null || true
    wait "$follower" 2>/dev/null || true
    stop_server
    row "batch client, 1,000,000-line script with receipts to a --follow receiver" \
        "$count delivered in $seconds s; every line accounted for, client exit $status after $accounted s" "" "$cpu" "" "$rss MiB"
}

throughput "throughput, 1 pair, 32 B" --pairs 1 --messages 5000000 --size 32
throughput "throughput, 100 pairs, 32 B" --pairs 100 --messages 100000 --size 32
throughput "throughput, 1000 pairs, 32 B" --pairs 1000 --messages 10000 --size 32
throughput "throughput, 10 pairs, 1 KiB" --pairs 10 --messages 200000 --size 1024
# The same 1 KiB end-to-end encrypted: each message the sealed envelope
# chat-client --e2e sends in a one-way stream (made once: the server does
# no cryptography, the envelope's size is what it costs).
throughput "throughput, 10 pairs, 1 KiB of plaintext as sealed e2e envelopes" --pairs 10 --messages 200000 --size 1024 --sealed
# The senders ask for receipts and read them: their cost on the hot path.
throughput "throughput, 1 pair, 32 B, receipts" --pairs 1 --messages 5000000 --size 32 --receipts
throughput "throughput, 100 pairs, 32 B, receipts" --pairs 100 --messages 100000 --size 32 --receipts
# Messages to registered names nobody is logged in to, on a server with
# --store: each counted once its STORED receipt came, which the server
# sends after the commit and its fsync. A fresh store and accounts file
# for every run (chat-bench writes the recipients into the accounts file,
# which the server reads again within a second).
stored() {
    local name=$1; shift
    server_args=(--accounts "$work/accounts" --store "$work/store.redb")
    runs=()
    for i in 1 2 3; do
        rm -f "$work/store.redb"
        echo "# chat-bench stored" > "$work/accounts"
        bench "$name (run $i)" stored --accounts-file "$work/accounts" "$@"
        cp "$work/result.json" "$work/stored-$i.json"
        runs+=("$work/stored-$i.json")
    done
    server_args=()
    mapfile -t runs < <(python3 -c 'import json,sys; [print(f) for f in sorted(sys.argv[1:], key=lambda f: json.load(open(f))["msgs_per_s"])]' "${runs[@]}")
    local r=${runs[1]}
    row "$name" "$(fmt "$(json "$r" msgs_per_s)" ',.0f') msgs/s stored (fsynced); 3 runs: $(range msgs_per_s 1e6 .2f "${runs[@]}") M" \
        "" "$(fmt "$(json "$r" server_cpu_s)" .2f)" \
        "$(fmt "$(json "$r" bench_cpu_s)" .2f)" "$(fmt "$(( $(json "$r" server_rss_kib) ))" ',.0f') KiB"
}
stored "stored for offline registered names, 100 pairs, 32 B" --pairs 100 --messages 10000 --size 32
# The same workload on Redis Streams (XADD; AOF with appendfsync always,
# then everysec) and NATS JetStream (file storage; nats-server syncs on its
# own schedule, not per acknowledgement), a fresh data directory per run;
# a message counts once acknowledged.
stored_peer() {
    local name=$1 kind=$2; shift 2
    local server=redis-server
    [ "$kind" = jetstream ] && server=nats-server
    if ! command -v "$server" > /dev/null; then
        row "$name" "not installed (apt install $server)" "" "" "" ""
        return
    fi
    runs=()
    for i in 1 2 3; do
        echo "== $name (run $i)" >&2
        rm -rf "$work/peer-data"
        mkdir -p "$work/peer-data"
        port=$(free_port)
        case $kind in
            jetstream) nats-server -p "$port" -a 127.0.0.1 -js -sd "$work/peer-data" > "$work/peer.log" 2>&1 & ;;
            *) redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes \
                   --appendfsync "${kind#redis-}" --dir "$work/peer-data" > "$work/peer.log" 2>&1 & ;;
        esac
        server_pid=$!
        for _ in $(seq 200); do
            python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.1)' \
                "$port" 2> /dev/null && break
            sleep 0.05
        done
        local driver=redis-streams
        [ "$kind" = jetstream ] && driver=jetstream
        "$bin/chat-bench" stored --peer "$driver" --addr "127.0.0.1:$port" --pid "$server_pid" "$@" > "$work/result.json"
        stop_server
        cp "$work/result.json" "$work/stored-peer-$i.json"
        runs+=("$work/stored-peer-$i.json")
    done
    mapfile -t runs < <(python3 -c 'import json,sys; [print(f) for f in sorted(sys.argv[1:], key=lambda f: json.load(open(f))["msgs_per_s"])]' "${runs[@]}")
    local r=${runs[1]}
    row "$name" "$(fmt "$(json "$r" msgs_per_s)" ',.0f') msgs/s acknowledged; 3 runs: $(range msgs_per_s 1e6 .2f "${runs[@]}") M" \
        "" "$(fmt "$(json "$r" server_cpu_s)" .2f)" \
        "$(fmt "$(json "$r" bench_cpu_s)" .2f)" "$(fmt "$(( $(json "$r" server_rss_kib) ))" ',.0f') KiB"
}
stored_peer "stored, same workload, Redis Streams (appendfsync always)" redis-always --pairs 100 --messages 10000 --size 32
stored_peer "stored, same workload, Redis Streams (appendfsync everysec)" redis-everysec --pairs 100 --messages 10000 --size 32
stored_peer "stored, same workload, NATS JetStream (file)" jetstream --pairs 100 --messages 10000 --size 32
latency "latency, 10 pairs, 10,000 msgs/s" --pairs 10 --rate 10000 --duration "${latency_seconds}s"
# The same workload on NATS and Redis publish/subscribe (Debian's
# nats-server and redis-server), measured in the same run.
for peer in nats redis; do
    if command -v "$peer-server" > /dev/null; then
        latency "latency, 10 pairs, 10,000 msgs/s, $peer-server $("$peer-server" --version | grep -o '[0-9][0-9.]*' | head -1)" \
            --pairs 10 --rate 10000 --duration "${latency_seconds}s"
    else
        row "latency, 10 pairs, 10,000 msgs/s, $peer-server" "not installed (apt install $peer-server)" "" "" "" ""
    fi
done
peer=
latency "latency, 10 pairs, 30,000 msgs/s" --pairs 10 --rate 30000 --duration "${latency_seconds}s"
# The same with the generator's receivers busy-polling on a thread of their
# own: the generator's wake-up latency leaves the figures, a core goes to it
# (at 30,000 msgs/s that core is missed by the server and the figures get
# worse, so only the light case runs this way).
latency "latency, 10 pairs, 10,000 msgs/s, busy-polling receiver" --pairs 10 --rate 10000 --duration "${latency_seconds}s" --spin
# The server on one worker thread (--threads 1) beside the default (one per
# core): low-load cost and scaling.
server_args=(--threads 1)
latency "latency, 10 pairs, 10,000 msgs/s, --threads 1" --pairs 10 --rate 10000 --duration "${latency_seconds}s"
throughput "throughput, 100 pairs, 32 B, --threads 1" --pairs 100 --messages 100000 --size 32
throughput "throughput, 10 pairs, 1 KiB, --threads 1" --pairs 10 --messages 200000 --size 1024
server_args=()
# The same over TLS (the server's self-signed set, clients trusting its
# CA); the generator does TLS too, on the same two cores.
server_args=(--tls-self-signed "$work/tls")
throughput "throughput, 10 pairs, 1 KiB, TLS" --pairs 10 --messages 200000 --size 1024 --tls-ca "$work/tls/ca.pem"
latency "latency, 10 pairs, 10,000 msgs/s, TLS" --pairs 10 --rate 10000 --duration "${latency_seconds}s" --tls-ca "$work/tls/ca.pem"
server_args=()
# The original Go programs' gob wire (a type definition with every
# message, both ways), against the same server.
throughput "throughput, 1 pair, 32 B, gob" --pairs 1 --messages 5000000 --size 32 --wire gob
throughput "throughput, 100 pairs, 32 B, gob" --pairs 100 --messages 100000 --size 32 --wire gob
# Several nodes through Redis (--cluster): senders on the measured node,
# receivers on a second one, everything (Redis too) on the same two cores;
# then both sides on the measured node of a cluster, against a single node
# above. The result column adds Redis's CPU per message.
cluster_throughput() {
    local name=$1; shift
    throughput "$name" "$@"
    local r=${runs[1]}
    local last=$(( ${#rows[@]} - 1 ))
    rows[$last]="${rows[$last]/ msgs\/s (/ msgs\/s, Redis $(python3 -c "import json; d=json.load(open('$r')); print(f\"{d['redis_cpu_s'] / d['delivered'] * 1e6:.2f}\")") µs\/msg (}"
}
start_cluster
server_args=(--cluster "redis://127.0.0.1:$redis_port")
bench_args=(--receiver-addr "127.0.0.1:$node_b_port")
# The same number of messages as the single-node rows above, which the
# across-nodes ones are compared with (a shorter run weighs the start-up,
# buffers growing and the first batches, more).
cluster_throughput "cluster, across nodes, 1 pair, 32 B" --pairs 1 --messages 5000000 --size 32
cluster_throughput "cluster, across nodes, 100 pairs, 32 B" --pairs 100 --messages 100000 --size 32
latency "cluster, across nodes, latency, 10 pairs, 10,000 msgs/s" --pairs 10 --rate 10000 --duration "${latency_seconds}s"
bench_args=()
cluster_throughput "cluster, same node, 100 pairs, 32 B" --pairs 100 --messages 100000 --size 32
# The across-nodes target is a ratio to one node. This VM's speed drifts
# between rows minutes apart by more than the work differs, so the two
# also run interleaved: three pairs of runs, one node (no --cluster) then
# across nodes; the row gives the medians and each pair's ratio.
interleaved_ratio() {
    local name=$1; shift
    local single=() across=()
    local cluster_args=("${server_args[@]}")
    for i in 1 2 3; do
        server_args=()
        bench "$name, one node (pair $i)" throughput "$@"
        cp "$work/result.json" "$work/ratio-single-$i.json"
        single+=("$work/ratio-single-$i.json")
        server_args=("${cluster_args[@]}")
        bench_args=(--receiver-addr "127.0.0.1:$node_b_port")
        bench "$name, across nodes (pair $i)" throughput "$@"
        bench_args=()
        cp "$work/result.json" "$work/ratio-across-$i.json"
        across+=("$work/ratio-across-$i.json")
    done
    row "$name" "$(python3 -c '
import json, statistics, sys
n = len(sys.argv[1:]) // 2
rate = lambda f: json.load(open(f))["msgs_per_s"]
single = [rate(f) for f in sys.argv[1:n + 1]]
across = [rate(f) for f in sys.argv[n + 1:]]
pairs = ", ".join(f"{a / s:.0%}" for s, a in zip(single, across))
print(f"across {statistics.median(across) / 1e6:.2f} M against one node {statistics.median(single) / 1e6:.2f} M"
      f" ({statistics.median(across) / statistics.median(single):.0%}); each pair: {pairs}")
' "${single[@]}" "${across[@]}")" "" "" "" ""
}
interleaved_ratio "across nodes against one node, interleaved, 100 pairs, 32 B" --pairs 100 --messages 100000 --size 32
server_args=()
stop_cluster
# Messages that wait across nodes (--cluster with --accounts): registered
# names' logs are Redis Streams. The stored case as above, through one node
# and one Redis with appendfsync always (like the Redis Streams row); a
# receipt comes once Redis answered the XADDs. Then a catch-up of
# 1,000,000 stored messages by a client on a second node. A fresh Redis
# (its data directory emptied) for every run.
stored_across_nodes() {
    local runs=() catchups=()
    local aof="$work/redis-aof"
    for i in 1 2 3; do
        rm -rf "$aof"; mkdir -p "$aof"
        redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
            --dir "$aof" > "$work/redis.log" 2>&1 &
        redis_pid=$!
        for _ in $(seq 200); do
            redis-cli -p "$redis_port" ping > /dev/null 2>&1 && break
            sleep 0.05
        done
        echo "# chat-bench stored" > "$work/accounts"
        server_args=(--cluster "redis://127.0.0.1:$redis_port" --accounts "$work/accounts"
            --allow-plaintext-passwords --history-max 2000000)
        bench "stored across nodes (run $i)" stored --accounts-file "$work/accounts" --pairs 100 --messages 10000 --size 32
        cp "$work/result.json" "$work/stored-across-$i.json"
        runs+=("$work/stored-across-$i.json")
        # 1,000,000 to one name through one node, caught up on another.
        "$bin/chat-server" 0 --bind 127.0.0.1 -q "${server_args[@]}" \
            < /dev/null > "$work/node-b.out" 2> "$work/node-b.log" &
        node_b_pid=$!
        node_b_port=$(listening_port "$work/node-b.out" "$work/node-b.log")
        start_server "${server_args[@]}"
        "$bin/chat-bench" stored --accounts-file "$work/accounts" --pairs 1 --messages 1000000 --size 32 \
            --addr "127.0.0.1:$port" --pid "$server_pid" > /dev/null
        local t0 t1 count
        t0=$(date +%s.%N)
        count=$(PMCHAT_PASSWORD=unused XDG_STATE_HOME="$work/state-$i" "$bin/chat-client" 127.0.0.1 "$node_b_port" \
            bench-stored-0 --allow-plaintext-password --follow --until-caught-up --since all | wc -l)
        t1=$(date +%s.%N)
        catchups+=("$(python3 -c "print(f'{$t1 - $t0:.2f}')")")
        echo "caught up $count in ${catchups[-1]} s" >&2
        stop_server
        stop_cluster
    done
    server_args=()
    mapfile -t runs < <(python3 -c 'import json,sys; [print(f) for f in sorted(sys.argv[1:], key=lambda f: json.load(open(f))["msgs_per_s"])]' "${runs[@]}")
    local r=${runs[1]}
    row "stored across nodes, offline registered names, 100 pairs, 32 B, one Redis (appendfsync always)" \
        "$(fmt "$(json "$r" msgs_per_s)" ',.0f') msgs/s stored (XADD answered); 3 runs: $(range msgs_per_s 1e6 .2f "${runs[@]}") M" \
        "" "$(fmt "$(json "$r" server_cpu_s)" .2f)" \
        "$(fmt "$(json "$r" bench_cpu_s)" .2f)" "$(fmt "$(( $(json "$r" server_rss_kib) ))" ',.0f') KiB"
    row "catch-up of 1,000,000 stored messages on another node (--until-caught-up --since all)" \
        "3 runs: ${catchups[*]} s" "" "" "" ""
}
stored_across_nodes
conns "10,000 idle connections" 10000
# What a session keeps once it went quiet after a burst (16 x 2 KiB to
# itself, then 1 s idle): the same as one that never sent anything.
conns "2,000 connections idle 1 s after a 16 x 2 KiB burst each" 2000 --burst 16 --burst-size 2048
# Both processes need one descriptor per connection; a hard limit below
# 50,000 (which only a privileged user can raise) caps this case.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 50100 ]; then
    conns "50,000 idle connections" 50000
else
    held=$(( (hard - 200) / 1000 * 1000 ))
    conns "50,000 idle connections (capped at $held: open-files hard limit $hard)" "$held"
fi
batch_client

# The client's end-to-end encryption on one core, no server (#27's
# target: 50,000 msgs/s at 32 B, encrypt + decrypt).
crypto_runs=()
for i in 1 2 3; do
    echo "== e2e crypto, 32 B (run $i)" >&2
    "$bin/chat-bench" crypto --messages 200000 --size 32 > "$work/crypto-$i.json"
    crypto_runs+=("$work/crypto-$i.json")
done
mapfile -t crypto_runs < <(python3 -c 'import json,sys; [print(f) for f in sorted(sys.argv[1:], key=lambda f: json.load(open(f))["msgs_per_s"])]' "${crypto_runs[@]}")
r=${crypto_runs[1]}
row "e2e crypto, 32 B: encrypt, carry as a sealed envelope, decrypt (client, one core, no server)" \
    "$(fmt "$(json "$r" msgs_per_s)" ',.0f') msgs/s (encrypt $(fmt "$(json "$r" encrypt_us)" .1f) µs, decrypt $(fmt "$(json "$r" decrypt_us)" .1f) µs); 3 runs: $(range msgs_per_s 1e3 .1f "${crypto_runs[@]}") k" \
    "" "" "$(fmt "$(json "$r" bench_cpu_s)" .2f)" ""

echo
echo "| case | result | latency p50 / p99 / p99.9 | server CPU s | bench CPU s | server RSS |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
