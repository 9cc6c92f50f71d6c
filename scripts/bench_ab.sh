#!/usr/bin/env bash
# Two (or more) builds of scimsync side by side, for judging a change on a noisy machine:
# each build serves a fresh database on its own port, and the rounds of one workload
# alternate between them, so the machine's load lands on every build alike.
#
#   scripts/bench_ab.sh [options] NAME=BINARY NAME=BINARY ...
#     -m MODE    post (default; unique userNames), get_id or filter (one seeded user),
#                patch_empty (PATCH adding one member to a group that starts empty, a new
#                group each round) or patch_big (to a group of BIG_USERS [100000]); the
#                members come from a pool of POOL [100000] users in no group, never the
#                same one twice in a run (partitioned as scripts/bench.sh does)
#     -c N       connections [32]     -r N   rounds [5]     -d SECS  round length [8]
#
# e.g.  git worktree add /tmp/before HEAD~1 && (cd /tmp/before && cargo build --release)
#       cargo build --release
#       scripts/bench_ab.sh before=/tmp/before/target/release/scimsync \
#                           after=target/release/scimsync
#
# Prints one line per round and build (req/s, p50 and p99 in µs, errors), then the
# median per build. Needs wrk and python3, like scripts/bench.sh.
set -euo pipefail

mode=post connections=32 rounds=5 seconds=8
while getopts "m:c:r:d:" opt; do
    case "$opt" in
        m) mode=$OPTARG ;;
        c) connections=$OPTARG ;;
        r) rounds=$OPTARG ;;
        d) seconds=$OPTARG ;;
        *) sed -n '2,21p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [[ $# -lt 2 ]]; then
    sed -n '2,21p' "$0" >&2
    exit 2
fi
case "$mode" in post | get_id | filter | patch_empty | patch_big) ;; *) echo "unknown mode: $mode" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { echo "wrk is needed (Debian: apt-get install wrk)" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
lua="$root/benches/wrk/scim.lua"
threads=$((connections < 2 ? 1 : 2))

names=() binaries=() ports=() dirs=() pids=() tokens=() urls=() offsets=()
pool="${POOL:-100000}" big="${BIG_USERS:-100000}"
snapshot=""
if [[ "$mode" == patch_* ]]; then
    # One store for every build: the big group (empty for patch_empty), one empty group
    # per round, and the pool of members to add, applied as a pull would.
    snapshot=$(mktemp)
    users=$big; [[ "$mode" == patch_empty ]] && users=0
    # Owned by the IdP the initial token pushes for, which may therefore change it.
    python3 "$root/benches/gen_snapshot.py" roster --users "$users" --pool "$pool" --empty "$rounds" --idp default >"$snapshot"
fi
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for dir in "${dirs[@]}"; do rm -rf "$dir"; done
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
for spec in "$@"; do
    name=${spec%%=*} binary=${spec#*=}
    [[ -x "$binary" ]] || { echo "$name: $binary is not an executable" >&2; exit 1; }
    dir=$(mktemp -d)
    if [[ -n "$snapshot" ]]; then
        (cd "$dir" && "$binary" apply --snapshot "$snapshot" >"$dir/apply.txt" 2>&1) ||
            { echo "$name: apply --snapshot failed: $(tail -3 "$dir/apply.txt")" >&2; exit 1; }
    fi
    (cd "$dir" && exec "$binary" serve --listen "127.0.0.1:$port" >"$dir/log.txt" 2>&1) &
    names+=("$name") binaries+=("$binary") ports+=("$port") dirs+=("$dir") pids+=("$!")
    port=$((port + 1))
done

for i in "${!names[@]}"; do
    base="http://127.0.0.1:${ports[$i]}"
    for _ in $(seq 100); do
        [[ -s "${dirs[$i]}/initial-scim-token" ]] && curl -s -o /dev/null "$base/healthz" && break
        sleep 0.1
    done
    token=$(cat "${dirs[$i]}/initial-scim-token")
    tokens+=("$token")
    case "$mode" in
        post) urls+=("$base/scim/v2") ;;
        patch_*)
            urls+=("$base/scim/v2")
            offsets+=(0)
            python3 - "${dirs[$i]}" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(f"{sys.argv[1]}/scimsync.db")
pool = [r[0] for r in db.execute("SELECT id FROM users WHERE user_name LIKE 'pool%' ORDER BY user_name")]
big = db.execute("SELECT id FROM teams WHERE display_name = 'bench big group'").fetchone()[0]
empty = [r[0] for r in db.execute("SELECT id FROM teams WHERE display_name LIKE 'bench empty group %' ORDER BY display_name")]
open(f"{sys.argv[1]}/pool.txt", "w").write("\n".join(pool) + "\n")
json.dump({"big": big, "empty": empty}, open(f"{sys.argv[1]}/groups.json", "w"))
PY
            ;;
        get_id | filter)
            id=$(curl -sf -X POST -H "Authorization: Bearer $token" \
                -H 'Content-Type: application/scim+json' "$base/scim/v2/Users" \
                -d '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ab@example.com"}' |
                python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
            if [[ "$mode" == get_id ]]; then
                urls+=("$base/scim/v2/Users/$id")
            else
                urls+=("$base/scim/v2/Users?filter=userName%20eq%20%22ab@example.com%22")
            fi
            ;;
    esac
done

results=$(mktemp)
for round in $(seq "$rounds"); do
    for i in "${!names[@]}"; do
        case "$mode" in
            post) args=(post "${tokens[$i]}" "" "ab-${names[$i]}-$round") ;;
            patch_*)
                group=$(python3 -c 'import json, sys; g = json.load(open(sys.argv[1])); print(g["big"] if sys.argv[2] == "patch_big" else g["empty"][int(sys.argv[3]) - 1])' \
                    "${dirs[$i]}/groups.json" "$mode" "$round")
                args=(patch "${tokens[$i]}" "${dirs[$i]}/pool.txt" "$group" "${offsets[$i]}")
                ;;
            *) args=(plain "${tokens[$i]}") ;;
        esac
        line=$(wrk -t"$threads" -c"$connections" -d"${seconds}s" -s "$lua" "${urls[$i]}" -- "${args[@]}" 2>/dev/null |
            sed -n 's/^WRK_JSON //p')
        python3 -c '
import json, sys
r = json.loads(sys.argv[3])
print(sys.argv[1], sys.argv[2], round(r["rps"]), r["p50_us"], r["p99_us"], sum(r["errors"].values()))
if r.get("first_error"):
    print("  first error:", r["first_error"][:200], file=sys.stderr)
' "${names[$i]}" "$round" "$line" | tee -a "$results"
        if [[ "$mode" == patch_* ]]; then
            # The next round starts after the members this one added.
            offsets[i]=$(( offsets[i] + $(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["requests"])' "$line") ))
        fi
    done
done

echo "median req/s over $rounds rounds ($mode, $connections connections):"
python3 - "$results" "${names[@]}" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for name in sys.argv[2:]:
    rates = [int(r[2]) for r in rows if r[0] == name]
    print(f"  {name}: {statistics.median(rates):,.0f}  (rounds: {', '.join(map(str, rates))})")
PY
rm -f "$results" ${snapshot:+"$snapshot"}
