#!/usr/bin/env bash
# Resident memory of scimsync through a long write-heavy mix on a large store, for one
# or more builds side by side (issue #16: "RSS < 100 MB after a 10-minute write-heavy
# mix on 100,000 users").
#
#   scripts/bench_memory.sh [options] NAME=BINARY [NAME=BINARY ...]
#     -u N      users in the store [100000]     -t SECS  total length of the mix [600]
#     -s SECS   length of one step [20]         -c N     connections [16]
#     -H        run each server under heaptrack (its profile is kept in the output dir)
#
# Each build gets its own copy of one store (`scimsync apply --snapshot` of
# `benches/gen_snapshot.py roster`), then the same mix in lockstep: steps of POST /Users
# (new users: the store grows), GET /Users/{id} and GET /Users?filter=userName eq over
# the stored users, in the proportion 2 : 1 : 1. RSS and VmHWM are read from /proc
# after every step; the output directory (printed) holds rss.tsv and the server logs.
set -euo pipefail

users=100000 total=600 step=20 connections=16 heaptrack=0
while getopts "u:t:s:c:H" opt; do
    case "$opt" in
        u) users=$OPTARG ;;
        t) total=$OPTARG ;;
        s) step=$OPTARG ;;
        c) connections=$OPTARG ;;
        H) heaptrack=1 ;;
        *) sed -n '2,16p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -ge 1 ]] || { sed -n '2,16p' "$0" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is needed (Debian: apt-get install wrk)" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
lua="$root/benches/wrk/scim.lua"
out=$(mktemp -d /tmp/scimsync-memory.XXXXXX)
echo "output: $out" >&2

names=() binaries=() ports=() pids=()
cleanup() { # the servers, and under -H the ones heaptrack started
    for pid in "${pids[@]}"; do pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

python3 "$root/benches/gen_snapshot.py" roster --users "$users" --empty 0 >"$out/roster.json"
python3 - "$out/roster.json" "$out" <<'EOF'
import json, sys
snapshot = json.load(open(sys.argv[1]))
users = snapshot["users"]
with open(sys.argv[2] + "/names.txt", "w") as names:
    for u in users:
        names.write(u["user_name"] + "\n")
EOF

port=$((20000 + RANDOM % 20000))
first=""
for spec in "$@"; do
    name=${spec%%=*} binary=${spec#*=}
    dir="$out/$name"
    mkdir -p "$dir"
    if [[ -z "$first" ]]; then
        "$binary" --database-url "sqlite://$dir/scimsync.db" apply --snapshot "$out/roster.json" >"$dir/apply.txt" 2>&1
        first=$dir
    else
        cp "$first/scimsync.db" "$dir/"
    fi
    wrapper=()
    [[ $heaptrack == 1 ]] && wrapper=(heaptrack -o "$dir/heaptrack")
    (cd "$dir" && exec "${wrapper[@]}" "$binary" --database-url "sqlite://$dir/scimsync.db" serve \
        --listen "127.0.0.1:$port" >"$dir/log.txt" 2>&1) &
    pids+=("$!") names+=("$name") binaries+=("$binary") ports+=("$port")
    port=$((port + 1))
done

tokens=() ids=()
for i in "${!names[@]}"; do
    dir="$out/${names[$i]}" base="http://127.0.0.1:${ports[$i]}"
    for _ in $(seq 600); do curl -s -o /dev/null "$base/healthz" && break; sleep 0.1; done
    token=$("${binaries[$i]}" --database-url "sqlite://$dir/scimsync.db" token create --name "bench-memory" 2>>"$dir/cli.txt" | tail -1)
    tokens+=("$token")
done
# Ids as the store has them (the same in every copy).
sqlite3 "$first/scimsync.db" "SELECT id FROM users" >"$out/ids.txt" 2>/dev/null ||
    python3 -c "import sqlite3,sys; [print(r[0]) for r in sqlite3.connect(sys.argv[1]).execute('SELECT id FROM users')]" "$first/scimsync.db" >"$out/ids.txt"

server_pid() { # the scimsync process under its wrapper, if any
    local pid=$1 child
    child=$(pgrep -P "$pid" -f scimsync | head -1 || true)
    [[ -n "$child" ]] && echo "$child" || echo "$pid"
}

printf "elapsed_s\tbuild\tmode\treq_s\trss_mb\thwm_mb\n" >"$out/rss.tsv"
modes=(post get_id post filter)
elapsed=0 k=0
while (( elapsed < total )); do
    mode=${modes[$((k % ${#modes[@]}))]}
    wrks=()
    for i in "${!names[@]}"; do
        base="http://127.0.0.1:${ports[$i]}/scim/v2"
        case "$mode" in
            post) args=(post "${tokens[$i]}" "" "mem$k") ;;
            get_id) args=(get_id "${tokens[$i]}" "$out/ids.txt") ;;
            filter) args=(filter "${tokens[$i]}" "$out/names.txt") ;;
        esac
        wrk -t1 -c"$connections" -d"${step}s" --timeout 10s -s "$lua" "$base" -- "${args[@]}" \
            >"$out/${names[$i]}/wrk-$k.txt" 2>&1 &
        wrks+=("$!")
    done
    wait "${wrks[@]}"
    elapsed=$((elapsed + step)) k=$((k + 1))
    for i in "${!names[@]}"; do
        pid=$(server_pid "${pids[$i]}")
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
        hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
        rps=$(sed -n 's/^WRK_JSON .*"rps":\([0-9.]*\).*/\1/p' "$out/${names[$i]}/wrk-$((k - 1)).txt")
        printf "%d\t%s\t%s\t%s\t%.1f\t%.1f\n" "$elapsed" "${names[$i]}" "$mode" "${rps:-0}" \
            "$(echo "$rss / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)" | tee -a "$out/rss.tsv"
    done
done
echo "rss: $out/rss.tsv" >&2
