#!/usr/bin/env bash
# redis-benchmark against `strongbox serve` and, in the same sitting, against
# redis-server (AOF, appendfsync everysec) as a reference. Runs are interleaved round by
# round (strongbox, redis, strongbox, redis, ...) because the machine may be shared; the
# load average is recorded before each round. Each round starts both servers on a fresh
# data directory and a free port, and stops them again (strongbox must exit 0 and log
# "stopped cleanly").
#
# Usage: benches/redis_vs_strongbox.sh [path/to/strongbox]   (default: target/release/strongbox)
# Environment (defaults in brackets):
#   ROUNDS [3]  REQUESTS [200000]  CLIENTS [50]  PIPELINES ["1 16"]  TESTS [set,get]
#   KEYSPACE []  passed as redis-benchmark -r (empty: every request uses one key, the
#                redis-benchmark default)
#   FLUSH [2]    strongbox --flush-log-at-commit
#   KEEP [0]     1: keep the scratch directory (server logs, raw CSV) and print its path
# Needs redis-server, redis-benchmark and redis-cli on PATH (Debian: redis-server,
# redis-tools).
set -euo pipefail

bin="$(realpath "${1:-target/release/strongbox}")"
rounds="${ROUNDS:-3}"
requests="${REQUESTS:-200000}"
clients="${CLIENTS:-50}"
pipelines="${PIPELINES:-1 16}"
tests="${TESTS:-set,get}"
keyspace="${KEYSPACE:-}"
flush="${FLUSH:-2}"
keep="${KEEP:-0}"

for tool in redis-server redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { echo "redis_vs_strongbox: $tool not found" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "redis_vs_strongbox: no strongbox binary at $bin" >&2; exit 1; }

work="$(mktemp -d /tmp/redis_vs_strongbox.XXXXXX)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    if [ "$keep" = 1 ]; then echo "scratch directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# A TCP port no socket uses, below the ephemeral range (redis-benchmark's own client
# sockets take ephemeral ports, which could collide with a listen port chosen there).
free_port() {
    local p low
    low="$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    [ "$low" -gt 11000 ] || low=32768
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % (low - 10000)))
        if ! ss -Htan 2>/dev/null | awk '{ print $4 }' | grep -q ":$p\$"; then
            echo "$p"; return 0
        fi
    done
    echo "redis_vs_strongbox: no free port found" >&2; return 1
}

wait_ping() {   # port log
    for _ in $(seq 100); do
        redis-cli -p "$1" ping 2>/dev/null | grep -q PONG && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "redis_vs_strongbox: server on port $1 did not start" >&2; cat "$2" >&2; exit 1
}

# Runs redis-benchmark once per pipeline depth; prints "SET_P1 GET_P1 SET_P16 ..." rps.
# run_strongbox and run_redis write that line to $work/result-<server>-r<round>.
bench() {   # port name round
    local port="$1" name="$2" round="$3" p csv out=""
    for p in $pipelines; do
        csv="$work/$name-r$round-P$p.csv"
        # shellcheck disable=SC2086
        if ! redis-benchmark -p "$port" -t "$tests" -n "$requests" -c "$clients" -P "$p" \
                ${keyspace:+-r "$keyspace"} --csv >"$csv" 2>"$csv.err"; then
            echo "redis_vs_strongbox: redis-benchmark failed against $name" >&2
            cat "$csv" "$csv.err" >&2; exit 1
        fi
        if grep -qi error "$csv" "$csv.err"; then
            echo "redis_vs_strongbox: error replies from $name" >&2; cat "$csv" "$csv.err" >&2; exit 1
        fi
        for t in ${tests//,/ }; do
            local rps
            rps="$(awk -F, -v t="\"${t^^}\"" '$1 == t { gsub(/"/, "", $2); print $2 }' "$csv")"
            [ -n "$rps" ] || { echo "redis_vs_strongbox: no ${t^^} row for $name" >&2; cat "$csv" >&2; exit 1; }
            out="$out ${rps%.*}"
        done
    done
    echo "$out"
}

run_strongbox() {   # round
    local dir="$work/strongbox-r$1" port res rc
    mkdir -p "$dir"
    port="$(free_port)"
    # From the scratch directory: the first start writes ./strongbox-keys/keys.txt.
    (cd "$dir" && exec "$bin" --data "$dir/data" --flush-log-at-commit "$flush" \
        serve --listen "127.0.0.1:$port") >"$dir/serve.log" 2>&1 &
    server_pid=$!
    wait_ping "$port" "$dir/serve.log"
    redis-cli -p "$port" info encryption | grep -q 'scheme=aes' \
        || { echo "redis_vs_strongbox: strongbox is not encrypting" >&2; exit 1; }
    res="$(bench "$port" strongbox "$1")"
    redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
    rc=0; wait "$server_pid" || rc=$?
    server_pid=""
    if [ "$rc" != 0 ] || ! grep -q "stopped cleanly" "$dir/serve.log"; then
        echo "redis_vs_strongbox: strongbox did not stop cleanly (exit $rc)" >&2
        cat "$dir/serve.log" >&2; exit 1
    fi
    echo "$res" >"$work/result-strongbox-r$1"
}

run_redis() {   # round
    local dir="$work/redis-r$1" port res rc
    mkdir -p "$dir"
    port="$(free_port)"
    redis-server --port "$port" --bind 127.0.0.1 --appendonly yes --appendfsync everysec \
        --save '' --dir "$dir" --daemonize no >"$dir/redis.log" 2>&1 &
    server_pid=$!
    wait_ping "$port" "$dir/redis.log"
    [ "$(redis-cli -p "$port" config get appendfsync | tail -1)" = everysec ] \
        || { echo "redis_vs_strongbox: redis is not appendfsync everysec" >&2; exit 1; }
    res="$(bench "$port" redis "$1")"
    redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
    rc=0; wait "$server_pid" || rc=$?
    server_pid=""
    [ "$rc" = 0 ] || { echo "redis_vs_strongbox: redis-server exited $rc" >&2; cat "$dir/redis.log" >&2; exit 1; }
    echo "$res" >"$work/result-redis-r$1"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END {
    if (NR % 2) printf "%.2f", a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

cols=()
for p in $pipelines; do for t in ${tests//,/ }; do cols+=("${t^^} P$p"); done; done

echo "redis-benchmark -t $tests -n $requests -c $clients -P {${pipelines// /,}}${keyspace:+ -r $keyspace}"
echo "strongbox: $bin --data DIR --flush-log-at-commit $flush serve --listen 127.0.0.1:PORT (encrypted, default settings)"
echo "redis:     redis-server $(redis-server --version | awk '{ sub(/^v=/, "", $3); print $3 }') --appendonly yes --appendfsync everysec --save '' --port PORT --dir DIR"
echo "machine:   nproc $(nproc), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo

declare -a loads sb_rows redis_rows
for r in $(seq "$rounds"); do
    loads[$r]="$(uptime | sed 's/.*load average: //')"
    echo "round $r: load average $(uptime | sed 's/.*load average: //')" >&2
    run_strongbox "$r"   # not in $(...): the EXIT trap must see server_pid
    sb_rows[$r]="$(cat "$work/result-strongbox-r$r")"
    echo "  strongbox:${sb_rows[$r]}" >&2
    run_redis "$r"
    redis_rows[$r]="$(cat "$work/result-redis-r$r")"
    echo "  redis:    ${redis_rows[$r]}" >&2
done

header="| round | load (1/5/15 min) | server |"
rule="|---|---|---|"
for c in "${cols[@]}"; do header="$header $c |"; rule="$rule---:|"; done
echo "requests per second"
echo "$header"; echo "$rule"
for r in $(seq "$rounds"); do
    for s in strongbox redis; do
        if [ "$s" = strongbox ]; then row="${sb_rows[$r]}"; else row="${redis_rows[$r]}"; fi
        line="| $r | ${loads[$r]} | $s |"
        for v in $row; do line="$line $v |"; done
        echo "$line"
    done
done
echo
echo "strongbox / redis"
header="| round |"; rule="|---|"
for c in "${cols[@]}"; do header="$header $c |"; rule="$rule---:|"; done
echo "$header"; echo "$rule"
declare -a per_col
for r in $(seq "$rounds"); do
    read -r -a a <<<"${sb_rows[$r]}"
    read -r -a b <<<"${redis_rows[$r]}"
    line="| $r |"
    for i in "${!a[@]}"; do
        q="$(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { printf "%.6f", x / y }')"
        per_col[$i]="${per_col[$i]:-} $q"   # the median is taken of unrounded ratios
        line="$line $(printf '%.2f' "$q") |"
    done
    echo "$line"
done
line="| median |"
for i in "${!per_col[@]}"; do line="$line **$(echo "${per_col[$i]}" | median)** |"; done
echo "$line"
