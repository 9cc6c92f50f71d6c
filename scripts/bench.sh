#!/usr/bin/env bash
# Reruns every figure in BENCHMARKS.md, in one run, over loopback only:
#
#   1. SCIM HTTP workloads against three servers measured side by side, round-robin:
#        scimsync  (release build, fresh SQLite database, seeded through its own SCIM API;
#                   and the same build on PostgreSQL, 1 replica and PG_REPLICAS replicas
#                   sharing one database, each a row of its own in the same round-robin),
#        baseline  (benches/baseline: axum + fixed documents + one SQLite insert per write),
#        peer      (scim2-server from PyPI, the Python reference server, in a virtualenv);
#      with wrk, 32 connections, ROUNDS rounds of DURATION each, medians and p99.
#   2. The reconcile scale benchmark: plan/apply of 100,000 users, 10,000 groups and
#      1,000,000 memberships (benches/gen_snapshot.py), wall time and peak RSS.
#   3. The pull benchmark: `scimsync pull` of the same state from a local mock Microsoft
#      Graph (benches/baseline/src/bin/mock_graph.rs), 999 per page.
#
# Results: target/bench-results/ (results.jsonl raw, summary.json, summary.csv, report.md);
# the Markdown tables are printed at the end for BENCHMARKS.md.
#
# Environment (defaults in brackets):
#   QUICK=1            3 rounds × 3 s, 1 reconcile/pull round (a smoke run)
#   ROUNDS [3]  DURATION [10s]  CONNECTIONS [32]  WRK_THREADS [2]
#   SEED_USERS [10000]  SEED_MEMBERS [5000]  LARGE_USERS [100000]
#   POOL [100000] users to add in the PATCH workloads (scimsync, baseline); PEER_POOL [20000]
#   SCALE_USERS [100000]  SCALE_GROUPS [10000]  SCALE_MEMBERSHIPS [1000000]  SCALE_ROUNDS [3]
#   SKIP_HTTP=1 SKIP_PEER=1 SKIP_PG=1 SKIP_RECONCILE=1 SKIP_PULL=1   leave a part out
#   PG_URL [postgres://postgres@127.0.0.1:5432/postgres]  admin connection: the script
#                      creates fresh databases scimsync_bench_<random>_* there and drops
#                      them on exit (needs psql and the right to CREATE DATABASE)
#   PG_REPLICAS [3]    replicas of the multi-replica PostgreSQL row (one wrk thread each)
#   KEEP_TMP=1         keep the databases and server logs
#   PYTHON [python3]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

QUICK="${QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
    ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-3s}"; SCALE_ROUNDS="${SCALE_ROUNDS:-1}"
fi
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
WRK_THREADS="${WRK_THREADS:-2}"
SEED_USERS="${SEED_USERS:-10000}"
SEED_MEMBERS="${SEED_MEMBERS:-5000}"
LARGE_USERS="${LARGE_USERS:-100000}"
POOL="${POOL:-100000}"
PEER_POOL="${PEER_POOL:-20000}"
# The peer needs seconds per request on a 100,000-user store; with 32 connections its
# threads would keep working through a backlog long after each round, stealing CPU from
# the next server's round. Its 100,000-user workloads use fewer connections.
PEER_SLOW_CONNECTIONS="${PEER_SLOW_CONNECTIONS:-4}"
SCALE_USERS="${SCALE_USERS:-100000}"
SCALE_GROUPS="${SCALE_GROUPS:-10000}"
SCALE_MEMBERSHIPS="${SCALE_MEMBERSHIPS:-1000000}"
SCALE_ROUNDS="${SCALE_ROUNDS:-3}"
python="${PYTHON:-python3}"
SKIP_PG="${SKIP_PG:-0}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_REPLICAS="${PG_REPLICAS:-3}"
pg_on=0
[[ "${SKIP_HTTP:-0}" != 1 && "$SKIP_PG" != 1 ]] && pg_on=1
if [[ "$pg_on" == 1 ]] && (( PG_REPLICAS < 2 )); then
    echo "PG_REPLICAS must be at least 2 (the 1-replica row is always measured)" >&2; exit 2
fi

out="$root/target/bench-results"
venv="$root/target/bench-venv"
baseline_target="$root/target/bench-baseline"
scimsync="$root/target/release/scimsync"
baseline="$baseline_target/release/scimsync-bench-baseline"
mock_graph="$baseline_target/release/mock_graph"
lua="$root/benches/wrk/scim.lua"
run_id="$(date +%s)-$$"

log() { printf '\n==> %s\n' "$*" >&2; }

tmp="$(mktemp -d)"
declare -A pids=()
# PostgreSQL: databases created by this run (dropped on exit), and per PG server
# ("scimsync-pg1", "scimsync-pg$PG_REPLICAS"): its database, config file, ports, token.
pg_dbs=()
declare -A pg_db=() pg_cfg=() pg_ports=() pg_token=() wrk_hosts=()
pg_prefix="scimsync_bench_$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')"
stop() { # NAME: stops a server this script started
    local pid="${pids[$1]:-}"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    unset "pids[$1]"
}
cleanup() {
    trap '' INT TERM   # a second Ctrl-C must not cut the cleanup short
    local name db
    for name in "${!pids[@]}"; do stop "$name" || true; done
    if (( ${#pg_dbs[@]} )); then
        if [[ "${KEEP_TMP:-0}" == 1 ]]; then
            echo "kept PostgreSQL databases: ${pg_dbs[*]}" >&2
        else
            for db in "${pg_dbs[@]}"; do
                pg_admin "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 ||
                    echo "could not drop PostgreSQL database $db; drop it by hand" >&2
            done
        fi
    fi
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # NAME URL [TRIES]: waits until URL answers (any status)
    local name="$1" url="$2" tries="${3:-600}"
    for _ in $(seq 1 "$tries"); do
        if curl -s -o /dev/null --max-time 2 "$url"; then return 0; fi
        if ! kill -0 "${pids[$name]}" 2>/dev/null; then
            echo "$name exited before it was ready; its log:" >&2
            tail -50 "$tmp/$name.log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    echo "$name did not answer at $url" >&2
    exit 1
}

# PostgreSQL helpers. psql never reads ~/.psqlrc (-X) and stops at the first error.
pg_admin() { psql "$PG_URL" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }
pg_url_of() { # DB: the URL of database DB on the server PG_URL points at (same user, options)
    local base="${PG_URL%%\?*}" query=""
    [[ "$PG_URL" == *\?* ]] && query="?${PG_URL#*\?}"
    echo "${base%/*}/$1$query"
}
pg_q() { # SERVER SQL: runs SQL on SERVER's database, unaligned output
    psql "$(pg_url_of "${pg_db[$1]}")" -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"
}
pg_create() { # SERVER TAG: a fresh database for SERVER and a config file pointing at it
    local s="$1" db="${pg_prefix}_${1#scimsync-}_$2"
    pg_admin "CREATE DATABASE \"$db\"" >/dev/null
    pg_dbs+=("$db")
    pg_db[$s]="$db"
    mkdir -p "$tmp/$s-$2"
    pg_cfg[$s]="$tmp/$s-$2/scimsync.toml"
    # state_directory: where a replica would write initial-scim-token (never the repo);
    # the token is created beforehand by pg_token_create, so none of them does.
    cat >"${pg_cfg[$s]}" <<TOML
[server]
state_directory = "$tmp/$s-$2"

[database]
url = "$(pg_url_of "$db")"
TOML
}
pg_drop() { # SERVER: drops SERVER's current database (its replicas must be stopped)
    local db="${pg_db[$1]}" d kept=()
    [[ "${KEEP_TMP:-0}" == 1 ]] && return 0   # kept, listed at exit
    pg_admin "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
    for d in "${pg_dbs[@]}"; do [[ "$d" == "$db" ]] || kept+=("$d"); done
    pg_dbs=("${kept[@]}")
}
pg_token_create() { # SERVER: a SCIM token in SERVER's database (migrates an empty one)
    local t
    if ! t="$("$scimsync" --config "${pg_cfg[$1]}" token create --name "bench-$run_id" 2>>"$tmp/$1-cli.log")"; then
        echo "scimsync token create failed on ${pg_db[$1]}:" >&2; tail -20 "$tmp/$1-cli.log" >&2; exit 1
    fi
    pg_token[$1]="$(tr -d '[:space:]' <<<"$t")"
}
pg_replicas_of() { # SERVER: how many replicas it runs
    echo "${1#scimsync-pg}"
}
start_pg() { # SERVER: starts its replicas (all on one database), each on its own port
    local s="$1" n i port ports=() hosts=""
    n="$(pg_replicas_of "$s")"
    if [[ -z "${pg_ports[$s]:-}" ]]; then
        for i in $(seq 1 "$n"); do ports+=("$(free_port)"); done
        pg_ports[$s]="${ports[*]}"
    fi
    read -r -a ports <<<"${pg_ports[$s]}"
    for i in $(seq 1 "$n"); do
        "$scimsync" --config "${pg_cfg[$s]}" serve --listen "127.0.0.1:${ports[i-1]}" \
            >>"$tmp/$s-r$i.log" 2>&1 &
        pids[$s-r$i]=$!
        hosts+="${hosts:+,}127.0.0.1:${ports[i-1]}"
    done
    for i in $(seq 1 "$n"); do wait_http "$s-r$i" "http://127.0.0.1:${ports[i-1]}/healthz"; done
    # One replica: plain wrk, as for SQLite. Several: wrk spreads its threads over them.
    (( n > 1 )) && wrk_hosts[$s]="$hosts"
    return 0
}
stop_pg() { # SERVER
    local i
    for i in $(seq 1 "$(pg_replicas_of "$1")"); do stop "$1-r$i"; done
}
pg_settle() { # SERVER: waits (at most 90 s) until no backend works on its database
    local n
    for _ in $(seq 1 180); do
        n="$(pg_admin "SELECT count(*) FROM pg_stat_activity WHERE datname = '${pg_db[$1]}'
                       AND (state = 'active' OR backend_type LIKE 'autovacuum%')")" || return 0
        (( n == 0 )) && return 0
        sleep 0.5
    done
    echo "  PostgreSQL was still busy on ${pg_db[$1]} after 90 s" >&2
}

# ---------------------------------------------------------------------------------------
log "preparing tools"
if [[ "$pg_on" == 1 ]]; then
    command -v psql >/dev/null || { echo "psql is needed for the PostgreSQL rows (or SKIP_PG=1)" >&2; exit 1; }
    pg_admin "SELECT 1" >/dev/null || { echo "cannot reach PostgreSQL at $PG_URL (set PG_URL, or SKIP_PG=1)" >&2; exit 1; }
    pg_info="$(pg_admin "SELECT 'PostgreSQL ' || current_setting('server_version') || ', shared_buffers ' || current_setting('shared_buffers') || ', synchronous_commit ' || current_setting('synchronous_commit') || ', max_connections ' || current_setting('max_connections')")"
fi
if ! command -v wrk >/dev/null; then
    log "installing wrk from Debian's packages"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
if [[ ! -x "$venv/bin/scim2-server" ]]; then
    log "installing scim2-server into $venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "scim2-server==0.8.3"
fi
peer_version="$("$venv/bin/pip" show scim2-server 2>/dev/null | awk '/^Version/ {print $2}')"

log "building scimsync and the baseline (release)"
cargo build --quiet --release --bin scimsync
CARGO_TARGET_DIR="$baseline_target" cargo build --quiet --release \
    --manifest-path "$root/benches/baseline/Cargo.toml"

mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
rm -f "$out"/*errors.log
load() { cut -d' ' -f1-3 /proc/loadavg; }
"$python" - "$out/machine.json" <<PY
import json, os, platform, re, subprocess, sys, datetime
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
json.dump({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "nproc": os.cpu_count(), "cpu": cpu, "mem_gb": round(mem / 1024 / 1024, 1),
           "kernel": platform.release(), "load_before": "$(load)",
           "rounds": $ROUNDS, "duration": "$DURATION", "connections": $CONNECTIONS,
           "wrk_threads": $WRK_THREADS, "peer": "scim2-server $peer_version",
           "postgres": "${pg_info:-}", "pg_replicas": $( [[ "$pg_on" == 1 ]] && echo "$PG_REPLICAS" || echo None ),
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
           "dirty": bool(subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout.strip())},
          open(sys.argv[1], "w"), indent=2)
PY

record() { printf '%s\n' "$1" >>"$results"; }

# Prints a round's request count (stdout) and a one-line summary (stderr).
cat >"$tmp/show.py" <<'PY'
import json, sys
r, workload, server, rnd = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
print(r["requests"])
errors = sum(r["errors"].values())
line = "  %-12s %-13s round %s: %9.0f req/s  p50 %.2f ms  p99 %.2f ms" % (
    workload, server, rnd, r["rps"], (r["p50_us"] or 0) / 1000, (r["p99_us"] or 0) / 1000)
if errors:
    line += "  ERRORS %d: %s" % (errors, r["first_error"][:300])
print(line, file=sys.stderr)
PY

# wrk_round WORKLOAD SERVER ROUND URL MODE TOKEN [FILE] [PARAM] [OFFSET] [CONNECTIONS]
# Runs one bounded round, appends its JSON line, prints the number of requests.
wrk_round() {
    local workload="$1" server="$2" round="$3" url="$4" mode="$5" token="$6"
    local file="${7:-}" param="${8:-}" offset="${9:-0}" conns="${10:-$CONNECTIONS}"
    local threads="$WRK_THREADS"
    (( conns < threads )) && threads="$conns"
    local hosts="${wrk_hosts[$server]:-}" nh
    if [[ -n "$hosts" ]]; then
        # one wrk thread per replica, the connections rounded up to a multiple of them
        # (wrk gives every thread connections/threads): 32 -> 33 (11 each), 1 -> 3
        nh="$(tr ',' '\n' <<<"$hosts" | wc -l)"
        threads="$nh"
        conns=$(( (conns + nh - 1) / nh * nh ))
    fi
    local line
    line="$(WRK_HOSTS="$hosts" WRK_THREADS="$threads" wrk -t"$threads" -c"$conns" -d"$DURATION" --timeout 10s --latency \
        -s "$lua" "$url" -- "$mode" "$token" "$file" "$param" "$offset" 2>&1 | grep '^WRK_JSON ' | sed 's/^WRK_JSON //')" || true
    if [[ -z "$line" ]]; then
        echo "wrk produced no result for $workload on $server" >&2
        line='{"requests":0,"seconds":0,"rps":0,"p50_us":null,"p90_us":null,"p99_us":null,"max_us":null,"mean_us":null,"errors":{"connect":0,"read":0,"write":0,"status":0,"timeout":0},"first_error":"wrk failed"}'
    fi
    record "{\"kind\":\"http\",\"workload\":\"$workload\",\"server\":\"$server\",\"round\":$round,\"connections\":$conns,${line#\{}"
    "$python" "$tmp/show.py" "$line" "$workload" "$server" "$round"
}

rss_of() { # NAME SERVER USERS WHEN [REPLICA]: records resident and peak memory of a running server
    local pid="${pids[$1]}"
    local rss hwm
    rss="$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"
    hwm="$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")"
    record "{\"kind\":\"rss\",\"server\":\"$2\",\"users\":$3,\"when\":\"$4\",\"rss_kb\":$rss,\"hwm_kb\":$hwm${5:+,\"replica\":$5}}"
    echo "  $2${5:+ replica $5} RSS with $3 users ($4): $((rss / 1024)) MB, peak $((hwm / 1024)) MB" >&2
}
rss_pg() { # SERVER USERS WHEN: rss_of every replica
    local i
    for i in $(seq 1 "$(pg_replicas_of "$1")"); do rss_of "$1-r$i" "$1" "$2" "$3" "$i"; done
}

start_scimsync() { # NAME DIR PORT
    mkdir -p "$2"
    "$scimsync" --database-url "sqlite://$2/scimsync.db" serve --listen "127.0.0.1:$3" \
        >"$tmp/$1.log" 2>&1 &
    pids[$1]=$!
    wait_http "$1" "http://127.0.0.1:$3/healthz"
}

start_peer() { # NAME PORT TOKEN [PRELOAD IDS]
    BENCH_PEER_PRELOAD="${4:-}" BENCH_PEER_IDS="${5:-}" \
        "$venv/bin/python" "$root/benches/peer_server.py" --port "$2" --bearer-token "$3" \
        >"$tmp/$1.log" 2>&1 &
    pids[$1]=$!
    wait_http "$1" "http://127.0.0.1:$2/v2/ServiceProviderConfig" 3000
}

start_baseline() { # NAME PORT
    "$baseline" "127.0.0.1:$2" "$tmp/$1.db" >"$tmp/$1.log" 2>&1 &
    pids[$1]=$!
    wait_http "$1" "http://127.0.0.1:$2/scim/v2/Users/x"
}

settle() { # NAME: waits (at most 90 s) until a server has finished its backlog (idle CPU)
    local pid="${pids[$1]:-}" a b
    [[ -n "$pid" ]] || return 0
    for _ in $(seq 1 180); do
        a="$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null)" || return 0
        sleep 0.5
        b="$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null)" || return 0
        (( b - a <= 2 )) && return 0
    done
    echo "  $1 was still busy after 90 s" >&2
}

token_of() { tr -d '[:space:]' <"$1/initial-scim-token"; }

settle_server() { # SERVER: settle, for a PostgreSQL server its replicas and the database
    local i
    case "$1" in
        scimsync-pg*)
            for i in $(seq 1 "$(pg_replicas_of "$1")"); do settle "$1-r$i"; done
            pg_settle "$1" ;;
        *) settle "$1" ;;
    esac
}

# `/usr/bin/time -v` around a scimsync command: records wall time and peak RSS.
timed() { # BENCHMARK STEP ROUND EXPECTED_EXITS EXTRA_JSON -- COMMAND...
    local bench="$1" step="$2" round="$3" expected="$4" extra="$5"
    shift 6
    local code=0
    /usr/bin/time -v -o "$tmp/time.txt" "$@" >"$tmp/$bench-$step.out" 2>"$tmp/$bench-$step.err" || code=$?
    local wall rss
    wall="$("$python" -c '
import sys
for l in open(sys.argv[1]):
    if "Elapsed (wall clock)" in l:
        parts = [float(p) for p in l.rsplit(" ", 1)[1].split(":")]
        s = 0
        for p in parts: s = s * 60 + p
        print(s)' "$tmp/time.txt")"
    rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/time.txt")"
    record "{\"kind\":\"cli\",\"benchmark\":\"$bench\",\"step\":\"$step\",\"round\":$round,\"wall_s\":$wall,\"max_rss_kb\":$rss,\"exit\":$code${extra:+,$extra}}"
    echo "  $bench $step round $round: ${wall} s, peak RSS $((rss / 1024)) MB, exit $code" >&2
    if [[ " $expected " != *" $code "* ]]; then
        echo "unexpected exit code $code from: $*" >&2
        tail -20 "$tmp/$bench-$step.err" >&2
        return 1
    fi
}

scim_base() { echo "http://127.0.0.1:$1/scim/v2"; }
peer_base() { echo "http://127.0.0.1:$1/v2"; }

# ---------------------------------------------------------------------------------------
if [[ "${SKIP_HTTP:-0}" != 1 ]]; then
    peer_token="bench-peer-token-$run_id"
    sp="$(free_port)"; bp="$(free_port)"; pp="$(free_port)"
    log "phase 1: $SEED_USERS users and a group of $SEED_MEMBERS, seeded over SCIM"
    start_scimsync scimsync "$tmp/small" "$sp"
    stoken="$(token_of "$tmp/small")"
    start_baseline baseline "$bp"
    "$python" "$root/benches/seed.py" "$(scim_base "$sp")" "$stoken" "$tmp/seed-scimsync.json" \
        --users "$SEED_USERS" --members "$SEED_MEMBERS" --prefix seed
    "$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"kind":"seed","server":"scimsync","users":len(d["user_ids"]),"seconds":d["seconds"],"users_per_second":d["users_per_second"],"retries":d.get("retries",0)}))' \
        "$tmp/seed-scimsync.json" >>"$results"
    "$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); open(sys.argv[2],"w").write("\n".join(d["user_ids"])+"\n"); open(sys.argv[3],"w").write("\n".join(d["user_names"])+"\n")' \
        "$tmp/seed-scimsync.json" "$tmp/ids-scimsync.txt" "$tmp/names.txt"
    pg_servers=()
    if [[ "$pg_on" == 1 ]]; then
        pg_servers=(scimsync-pg1 "scimsync-pg$PG_REPLICAS")
        for s in "${pg_servers[@]}"; do
            log "$s: a fresh PostgreSQL database ($pg_prefix*), $(pg_replicas_of "$s") replica(s), seeded over SCIM like SQLite"
            pg_create "$s" small
            pg_token_create "$s"
            start_pg "$s"
            # through the first replica, as for SQLite (the others share the database)
            "$python" "$root/benches/seed.py" "$(scim_base "${pg_ports[$s]%% *}")" "${pg_token[$s]}" "$tmp/seed-$s.json" \
                --users "$SEED_USERS" --members "$SEED_MEMBERS" --prefix seed
            "$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"kind":"seed","server":sys.argv[3],"users":len(d["user_ids"]),"seconds":d["seconds"],"users_per_second":d["users_per_second"],"retries":d.get("retries",0)})); open(sys.argv[2],"w").write("\n".join(d["user_ids"])+"\n")' \
                "$tmp/seed-$s.json" "$tmp/ids-$s.txt" "$s" >>"$results"
        done
    fi
    servers=(scimsync "${pg_servers[@]}" baseline)
    if [[ "${SKIP_PEER:-0}" != 1 ]]; then
        start_peer peer "$pp" "$peer_token"
        "$python" "$root/benches/seed.py" "$(peer_base "$pp")" "$peer_token" "$tmp/seed-peer.json" \
            --users "$SEED_USERS" --members "$SEED_MEMBERS" --prefix seed
        "$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"kind":"seed","server":"peer","users":len(d["user_ids"]),"seconds":d["seconds"],"users_per_second":d["users_per_second"]})); open(sys.argv[2],"w").write("\n".join(d["user_ids"])+"\n")' \
            "$tmp/seed-peer.json" "$tmp/ids-peer.txt" >>"$results"
        servers+=(peer)
    fi
    # A PostgreSQL server's URL is its first replica's; wrk_round spreads the load over the
    # others through wrk_hosts (benches/wrk/scim.lua, WRK_HOSTS).
    url_of() { case "$1" in scimsync) scim_base "$sp" ;; baseline) scim_base "$bp" ;; peer) peer_base "$pp" ;;
                            scimsync-pg*) scim_base "${pg_ports[$1]%% *}" ;; esac; }
    token_for() { case "$1" in scimsync) echo "$stoken" ;; baseline) echo "" ;; peer) echo "$peer_token" ;;
                               scimsync-pg*) echo "${pg_token[$1]}" ;; esac; }
    ids_for() { case "$1" in peer|scimsync-pg*) echo "$tmp/ids-$1.txt" ;; *) echo "$tmp/ids-scimsync.txt" ;; esac; }

    for workload in get_id filter post; do
        log "workload $workload"
        for round in $(seq 1 "$ROUNDS"); do
            for s in "${servers[@]}"; do
                case "$workload" in
                    get_id) wrk_round get_id "$s" "$round" "$(url_of "$s")" get_id "$(token_for "$s")" "$(ids_for "$s")" >/dev/null ;;
                    filter) wrk_round filter "$s" "$round" "$(url_of "$s")" filter "$(token_for "$s")" "$tmp/names.txt" >/dev/null ;;
                    post) wrk_round post "$s" "$round" "$(url_of "$s")" post "$(token_for "$s")" "" "bench-$run_id-r$round" >/dev/null ;;
                esac
                settle_server "$s"
            done
        done
    done
    rss_of scimsync scimsync "$(( SEED_USERS ))" "after GET/filter/POST with $SEED_USERS seeded users (plus the POSTed ones)"
    for s in "${pg_servers[@]}"; do
        rss_pg "$s" "$SEED_USERS" "after GET/filter/POST with $SEED_USERS seeded users (plus the POSTed ones)"
    done
    stop scimsync; stop peer
    for s in "${pg_servers[@]}"; do stop_pg "$s"; pg_drop "$s"; done

    # -----------------------------------------------------------------------------------
    log "phase 2: $LARGE_USERS users in one group (scimsync: apply --snapshot; peer: preloaded in-process)"
    # Owned by the IdP "default", which the SCIM tokens push for: groups pulled for any
    # other IdP are refused to them (403), and the PATCH rows would measure refusals.
    "$python" "$root/benches/gen_snapshot.py" roster --users "$LARGE_USERS" --empty "$ROUNDS" --idp default >"$tmp/roster.json"
    "$python" "$root/benches/gen_snapshot.py" roster --users "$LARGE_USERS" --pool "$POOL" --empty "$ROUNDS" --idp default >"$tmp/roster-pool.json"
    large="$tmp/large"; mkdir -p "$large"
    timed serve_setup apply_roster 1 "0" "" -- "$scimsync" --database-url "sqlite://$large/scimsync.db" apply --snapshot "$tmp/roster.json"
    if [[ "${SKIP_PEER:-0}" != 1 ]]; then
        start_peer peer "$pp" "$peer_token" "$LARGE_USERS:$PEER_POOL:$ROUNDS" "$tmp/peer-large.json"
        "$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); open(sys.argv[2],"w").write("\n".join(d["pool_ids"])+"\n")' \
            "$tmp/peer-large.json" "$tmp/pool-peer.txt"
    fi
    for s in "${pg_servers[@]}"; do
        pg_create "$s" large
        timed serve_setup "apply_roster_$s" 1 "0" "" -- "$scimsync" --config "${pg_cfg[$s]}" apply --snapshot "$tmp/roster.json"
        pg_token_create "$s"
    done
    start_scimsync scimsync "$large" "$sp"
    stoken="$(token_of "$large")"
    rss_of scimsync scimsync "$LARGE_USERS" "started on a store of $LARGE_USERS users"
    for s in "${pg_servers[@]}"; do
        start_pg "$s"
        rss_pg "$s" "$LARGE_USERS" "started on a store of $LARGE_USERS users"
    done
    page_path="/Users?startIndex=50001&count=100"
    log "workload page (32 connections, then 1 connection)"
    for round in $(seq 1 "$ROUNDS"); do
        for s in "${servers[@]}"; do
            c="$CONNECTIONS"; [[ "$s" == peer ]] && c="$PEER_SLOW_CONNECTIONS"
            wrk_round page "$s" "$round" "$(url_of "$s")$page_path" plain "$(token_for "$s")" "" "" 0 "$c" >/dev/null
            settle_server "$s"
        done
    done
    for round in $(seq 1 "$ROUNDS"); do
        for s in "${servers[@]}"; do
            wrk_round page_c1 "$s" "$round" "$(url_of "$s")$page_path" plain "$(token_for "$s")" "" "" 0 1 >/dev/null
            settle_server "$s"
        done
    done
    rss_of scimsync scimsync "$LARGE_USERS" "after the page workloads"
    stop scimsync
    for s in "${pg_servers[@]}"; do
        rss_pg "$s" "$LARGE_USERS" "after the page workloads"
        stop_pg "$s"
    done

    log "adding $POOL users in no group (members for the PATCH workloads)"
    timed serve_setup apply_pool 1 "0" "" -- "$scimsync" --database-url "sqlite://$large/scimsync.db" apply --snapshot "$tmp/roster-pool.json"
    "$python" - "$large/scimsync.db" "$tmp" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
pool = [r[0] for r in db.execute("SELECT id FROM users WHERE user_name LIKE 'pool%' ORDER BY user_name")]
big = db.execute("SELECT id FROM teams WHERE display_name = 'bench big group'").fetchone()[0]
empty = [r[0] for r in db.execute("SELECT id FROM teams WHERE display_name LIKE 'bench empty group %' ORDER BY display_name")]
open(f"{sys.argv[2]}/pool-scimsync.txt", "w").write("\n".join(pool) + "\n")
json.dump({"group_id": big, "empty_group_ids": empty}, open(f"{sys.argv[2]}/groups-scimsync.json", "w"))
PY
    for s in "${pg_servers[@]}"; do
        timed serve_setup "apply_pool_$s" 1 "0" "" -- "$scimsync" --config "${pg_cfg[$s]}" apply --snapshot "$tmp/roster-pool.json"
        pg_q "$s" "SELECT id FROM users WHERE user_name LIKE 'pool%' ORDER BY user_name COLLATE \"C\"" >"$tmp/pool-$s.txt"
        pg_q "$s" "SELECT id FROM teams WHERE display_name = 'bench big group'" >"$tmp/big-$s.txt"
        pg_q "$s" "SELECT id FROM teams WHERE display_name LIKE 'bench empty group %' ORDER BY display_name COLLATE \"C\"" >"$tmp/empty-$s.txt"
        "$python" -c 'import json,sys; json.dump({"group_id": open(sys.argv[1]).read().split()[0], "empty_group_ids": open(sys.argv[2]).read().split()}, open(sys.argv[3], "w"))' \
            "$tmp/big-$s.txt" "$tmp/empty-$s.txt" "$tmp/groups-$s.json"
    done
    start_scimsync scimsync "$large" "$sp"
    for s in "${pg_servers[@]}"; do start_pg "$s"; done
    group_of() { # SERVER big|ROUND
        local f
        case "$1" in peer) f="$tmp/peer-large.json" ;; scimsync-pg*) f="$tmp/groups-$1.json" ;; *) f="$tmp/groups-scimsync.json" ;; esac
        "$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["group_id"] if sys.argv[2]=="big" else d["empty_group_ids"][int(sys.argv[2])-1])' "$f" "$2"
    }
    pool_for() { case "$1" in peer|scimsync-pg*) echo "$tmp/pool-$1.txt" ;; *) echo "$tmp/pool-scimsync.txt" ;; esac; }
    declare -A offset=()
    for s in "${servers[@]}"; do offset[$s]=0; done
    log "workloads patch_empty and patch_big (one new member per request, never the same one twice)"
    for round in $(seq 1 "$ROUNDS"); do
        for s in "${servers[@]}"; do
            wrk_round patch_empty "$s" "$round" "$(url_of "$s")" patch "$(token_for "$s")" "$(pool_for "$s")" "$(group_of "$s" "$round")" 0 >/dev/null
            settle_server "$s"
        done
        for s in "${servers[@]}"; do
            c="$CONNECTIONS"; [[ "$s" == peer ]] && c="$PEER_SLOW_CONNECTIONS"
            n="$(wrk_round patch_big "$s" "$round" "$(url_of "$s")" patch "$(token_for "$s")" "$(pool_for "$s")" "$(group_of "$s" big)" "${offset[$s]}" "$c" | head -1)"
            settle_server "$s"
            offset[$s]=$(( ${offset[$s]} + n ))
        done
    done
    for s in "${servers[@]}"; do
        pool_size="$(wc -l <"$(pool_for "$s")")"
        if (( ${offset[$s]} > pool_size )); then
            echo "  note: $s made ${offset[$s]} adds to the big group from a pool of $pool_size; the excess were re-adds" >&2
        fi
    done
    rss_of scimsync scimsync "$((LARGE_USERS + POOL))" "after the PATCH workloads"
    "$python" - "$large/scimsync.db" >&2 <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for name, n in db.execute("SELECT t.display_name, count(m.user_id) FROM teams t LEFT JOIN memberships m ON m.team_id = t.id GROUP BY t.id ORDER BY t.display_name"):
    print(f"  scimsync after the PATCH workloads: {name}: {n} members")
PY
    if grep -qiE 'database is locked|panicked|ERROR' "$tmp/scimsync.log"; then
        echo "  scimsync logged errors under load (first ones):" >&2
        grep -iE 'database is locked|panicked|ERROR' "$tmp/scimsync.log" | head -5 >&2
        grep -iE 'database is locked|panicked|ERROR' "$tmp/scimsync.log" | head -20 >"$out/scimsync-errors.log"
    fi
    for s in "${pg_servers[@]}"; do
        rss_pg "$s" "$((LARGE_USERS + POOL))" "after the PATCH workloads"
        pg_q "$s" "SELECT t.display_name || ': ' || count(m.user_id) || ' members' FROM teams t LEFT JOIN memberships m ON m.team_id = t.id GROUP BY t.id, t.display_name ORDER BY t.display_name COLLATE \"C\"" |
            sed "s/^/  $s after the PATCH workloads: /" >&2
        # every replica's log, all phases: what PostgreSQL refused (deadlocks, serialization
        # failures, pool timeouts) shows up here as well as in the non-2xx counts
        pattern='panicked|ERROR|deadlock|serializ|could not|pool timed out'
        if cat "$tmp/$s"-r*.log | grep -qiE "$pattern"; then
            echo "  $s logged errors under load (first ones):" >&2
            grep -iE "$pattern" "$tmp/$s"-r*.log | head -5 >&2
            grep -iE "$pattern" "$tmp/$s"-r*.log | head -50 >"$out/$s-errors.log"
        fi
        stop_pg "$s"
    done
    stop scimsync; stop peer; stop baseline
fi

# ---------------------------------------------------------------------------------------
snap0="$tmp/scale.json"; snap1="$tmp/scale-1pct.json"
if [[ "${SKIP_RECONCILE:-0}" != 1 || "${SKIP_PULL:-0}" != 1 ]]; then
    log "generating the scale snapshots ($SCALE_USERS users, $SCALE_GROUPS groups, $SCALE_MEMBERSHIPS memberships; and a 1% change)"
    "$python" "$root/benches/gen_snapshot.py" scale --users "$SCALE_USERS" --groups "$SCALE_GROUPS" \
        --memberships "$SCALE_MEMBERSHIPS" >"$snap0"
    "$python" "$root/benches/gen_snapshot.py" scale --users "$SCALE_USERS" --groups "$SCALE_GROUPS" \
        --memberships "$SCALE_MEMBERSHIPS" --change-pct 1 >"$snap1"
fi

if [[ "${SKIP_RECONCILE:-0}" != 1 ]]; then
    log "reconcile scale benchmark, $SCALE_ROUNDS round(s)"
    for round in $(seq 1 "$SCALE_ROUNDS"); do
        d="$tmp/reconcile-$round"; mkdir -p "$d"
        db=(--database-url "sqlite://$d/scimsync.db")
        # plan on an empty store (the database is created, migrated and left empty)
        timed reconcile plan_empty "$round" "0 2" "" -- "$scimsync" "${db[@]}" plan --snapshot "$snap0" --format json --detailed-exitcode
        ops="$(grep -o '"kind"' "$tmp/reconcile-plan_empty.out" | wc -l)"
        sed -i '$ s/}$/,"ops":'"$ops"'}/' "$results"
        timed reconcile apply "$round" "0" "" -- "$scimsync" "${db[@]}" apply --snapshot "$snap0"
        timed reconcile plan_noop "$round" "0" "" -- "$scimsync" "${db[@]}" plan --snapshot "$snap0" --format json --detailed-exitcode
        timed reconcile plan_1pct "$round" "2" "" -- "$scimsync" "${db[@]}" plan --snapshot "$snap1" --format json --detailed-exitcode --allow-deletions
        ops="$(grep -o '"kind"' "$tmp/reconcile-plan_1pct.out" | wc -l)"
        sed -i '$ s/}$/,"ops":'"$ops"'}/' "$results"
        timed reconcile apply_1pct "$round" "0" "" -- "$scimsync" "${db[@]}" apply --snapshot "$snap1" --allow-deletions
        rm -rf "$d"
    done
fi

if [[ "${SKIP_PULL:-0}" != 1 ]]; then
    log "pull benchmark: mock Graph, $SCALE_MEMBERSHIPS memberships at 999 per page, $SCALE_ROUNDS round(s)"
    gp="$(free_port)"
    "$mock_graph" "$snap0" "127.0.0.1:$gp" >"$tmp/mock_graph.log" 2>&1 &
    pids[mock_graph]=$!
    wait_http mock_graph "http://127.0.0.1:$gp/stats"
    cat >"$tmp/pull.toml" <<TOML
[[idp]]
name = "bench"
kind = "entra"
tenant_id = "bench-tenant"
client_id = "bench-client"
client_secret = "bench-secret"
token_url = "http://127.0.0.1:$gp/{tenant}/oauth2/v2.0/token"
api_base_url = "http://127.0.0.1:$gp/v1.0"
groups = ["*"]
concurrency = 4
TOML
    for round in $(seq 1 "$SCALE_ROUNDS"); do
        before="$(curl -s "http://127.0.0.1:$gp/stats" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["requests"])')"
        timed pull pull "$round" "0" "" -- "$scimsync" --config "$tmp/pull.toml" \
            --database-url "sqlite://$tmp/pull.db" pull --idp bench --out "$tmp/pulled.json"
        after="$(curl -s "http://127.0.0.1:$gp/stats" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["requests"])')"
        counts="$("$python" -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(json.dumps({"users": len(s["users"]), "groups": len(s["groups"]),
                  "memberships": sum(len(g["members"]) for g in s["groups"]), "complete": s["complete"]}))' "$tmp/pulled.json")"
        sed -i '$ s/}$/,"requests":'"$((after - before))"','"${counts#\{}"'/' "$results"
        echo "  pulled: $counts, $((after - before)) Graph requests" >&2
    done
    stop mock_graph
fi

# ---------------------------------------------------------------------------------------
"$python" - "$out/machine.json" "$(load)" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); m["load_after"] = sys.argv[2]
json.dump(m, open(sys.argv[1], "w"), indent=2)
PY
log "results in $out (results.jsonl, summary.json, summary.csv, report.md)"
"$python" "$root/benches/report.py" "$out" | tee "$out/report.md"
