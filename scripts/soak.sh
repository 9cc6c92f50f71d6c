#!/usr/bin/env bash
# Soak run: mixed SCIM traffic at a steady rate against the real daemon for a bounded
# time, with a scheduled IdP sync every minute from a local mock of Microsoft Graph
# that also injects faults (a 503 storm, a 429 storm, an empty answer). A model of the
# expected state is kept as the traffic goes; at the end the daemon's state must equal
# it, resident memory must be flat, and no response may be an unexpected error.
#
#   scripts/soak.sh                      # 600 s at 20 requests/s
#   SOAK_SECONDS=120 SOAK_RATE=50 scripts/soak.sh
#
# Environment: SOAK_SECONDS (600), SOAK_RATE (20 requests/s), SCIMSYNC_BIN (default:
# builds and uses target/release/scimsync), SOAK_KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SCIMSYNC_BIN:-}" ]; then
    cargo build --release --bin scimsync >&2
    SCIMSYNC_BIN="$PWD/target/release/scimsync"
fi
WORK="$(mktemp -d)"
trap '[ "${SOAK_KEEP:-0}" = 1 ] && echo "work directory: $WORK" || rm -rf "$WORK"' EXIT

export SCIMSYNC_BIN WORK
exec python3 - <<'PY'
import http.server, json, os, random, re, signal, subprocess, sys, threading, time
import urllib.request, urllib.error, urllib.parse

BIN = os.environ["SCIMSYNC_BIN"]
WORK = os.environ["WORK"]
DURATION = int(os.environ.get("SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SOAK_RATE", "20"))
rng = random.Random(7)

# ---------------------------------------------------------------- the mock IdP
IDP_USERS = [{"id": f"idp-{i}", "userPrincipalName": f"staff{i}@soak.example",
              "mail": f"staff{i}@soak.example", "displayName": f"Staff {i}",
              "givenName": "Staff", "surname": str(i), "accountEnabled": True}
             for i in range(30)]

class Idp:
    """Group "LLM Soak All" holds every IdP user; "LLM Soak Rotating" a subset that
    changes each epoch. `fault` makes every answer fail or come back empty."""
    def __init__(self):
        self.lock = threading.Lock()
        self.epoch = 0
        self.fault = None          # None | "503" | "429" | "empty"
        self.requests = 0
        self.faults_served = 0
        self.good_pulls = []       # (time, epoch) of each complete, fault-free group listing

    def rotating(self, epoch):
        r = random.Random(epoch)
        return sorted(r.sample(range(30), 10))

    def groups(self):
        return [{"id": "grp-all", "displayName": "LLM Soak All"},
                {"id": "grp-rot", "displayName": "LLM Soak Rotating"},
                {"id": "grp-other", "displayName": "Not Managed"}]

    def members(self, gid, epoch):
        if gid == "grp-all":
            return IDP_USERS
        if gid == "grp-rot":
            return [IDP_USERS[i] for i in self.rotating(epoch)]
        return IDP_USERS[:3]

idp = Idp()

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in headers: self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.reply(200, {"access_token": "mock", "token_type": "Bearer", "expires_in": 3600})
    def do_GET(self):
        with idp.lock:
            idp.requests += 1
            fault, epoch = idp.fault, idp.epoch
        if fault in ("503", "429"):
            with idp.lock: idp.faults_served += 1
            headers = [("retry-after", "1")] if fault == "429" else []
            return self.reply(int(fault), {"error": {"code": "TooBusy"}}, headers)
        path = self.path.split("?")[0]
        if path.endswith("/groups"):
            if fault == "empty":
                with idp.lock: idp.faults_served += 1
                return self.reply(200, {"value": []})
            with idp.lock: idp.good_pulls.append((time.time(), epoch))
            return self.reply(200, {"value": idp.groups()})
        m = re.match(r".*/groups/([^/]+)/transitiveMembers", path)
        if m:
            return self.reply(200, {"value": idp.members(m.group(1), epoch)})
        m = re.match(r".*/users/([^/?]+)$", path)
        if m:
            for u in IDP_USERS:
                if m.group(1) in (u["id"], u["userPrincipalName"]):
                    return self.reply(200, u)
        self.reply(404, {"error": {"code": "Request_ResourceNotFound"}})

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
idp_url = f"http://127.0.0.1:{server.server_address[1]}"

# ---------------------------------------------------------------- the daemon
db = f"sqlite://{WORK}/scimsync.db"
env = {"PATH": os.environ["PATH"], "SCIMSYNC_DATABASE_URL": db,
       "SCIMSYNC_CONFIG": f"{WORK}/config.toml", "SCIMSYNC_LISTEN": "127.0.0.1:0"}
with open(f"{WORK}/config.toml", "w") as f:
    f.write(f'''
[[idp]]
name = "soak"
kind = "entra"
tenant_id = "soak.example"
client_id = "soak-client"
client_secret = "soak-secret"
token_url = "{idp_url}/token"
api_base_url = "{idp_url}/v1.0"
groups = ["LLM Soak *"]
schedule = "0 * * * * *"
max_retries = 1
retry_backoff_ms = 200
request_timeout_secs = 5
''')
token = subprocess.run([BIN, "token", "create", "--name", "soak"], env=env, check=True,
                       capture_output=True, text=True).stdout.strip()
log = open(f"{WORK}/daemon.log", "w")
daemon = subprocess.Popen([BIN, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
addr = None
for _ in range(300):
    time.sleep(0.1)
    text = open(f"{WORK}/daemon.log").read()
    m = re.search(r"listening.*?addr=(\S+)", text)
    if m: addr = m.group(1); break
if not addr:
    print(open(f"{WORK}/daemon.log").read()); sys.exit("daemon did not start")
BASE = f"http://{addr}/scim/v2"

def call(method, path, body=None, expect=(200,)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={
        "authorization": f"Bearer {token}", "content-type": "application/scim+json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    stats["requests"] += 1
    if status not in expect:
        stats["unexpected"].append(f"{method} {path} -> {status} {text[:200]}")
    elif status >= 400:
        stats["expected_errors"] += 1
    return status, (json.loads(text) if text.strip().startswith("{") else None)

def rss_kb():
    for line in open(f"/proc/{daemon.pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])
    return 0

# ---------------------------------------------------------------- the model
stats = {"requests": 0, "expected_errors": 0, "unexpected": []}
problems_during = []
users = {}    # id -> {"userName", "displayName", "active"}
groups = {}   # id -> {"displayName", "members": set(ids)}
memory = []
serial = 0

def new_user():
    global serial
    serial += 1
    name = f"scim{serial}@soak.example"
    s, body = call("POST", "/Users", {"userName": name, "displayName": f"Scim {serial}",
                                      "emails": [{"value": name, "primary": True}]}, (201,))
    if s == 201: users[body["id"]] = {"userName": name, "displayName": f"Scim {serial}", "active": True}

def action():
    r = rng.random()
    live = list(users)
    if r < 0.15 or len(live) < 10:
        new_user()
    elif r < 0.25:  # a duplicate userName, differing in case: 409
        u = users[rng.choice(live)]
        call("POST", "/Users", {"userName": u["userName"].upper()}, (409,))
    elif r < 0.40:
        uid = rng.choice(live); name = f"Renamed {rng.randrange(10**6)}"
        s, _ = call("PATCH", f"/Users/{uid}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "displayName", "value": name}]}, (200, 204))
        if s in (200, 204): users[uid]["displayName"] = name
    elif r < 0.47:
        uid = rng.choice(live); active = not users[uid]["active"]
        s, _ = call("PATCH", f"/Users/{uid}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "Replace", "value": {"active": "True" if active else "False"}}]}, (200, 204))
        if s in (200, 204): users[uid]["active"] = active
    elif r < 0.52:
        uid = rng.choice(live)
        s, _ = call("DELETE", f"/Users/{uid}", None, (204,))
        if s == 204:
            del users[uid]
            for g in groups.values(): g["members"].discard(uid)
        call("GET", f"/Users/{uid}", None, (404,))
    elif r < 0.57 or not groups:
        name = f"SCIM Soak Group {rng.randrange(10**9)}"
        s, body = call("POST", "/Groups", {"displayName": name}, (201,))
        if s == 201: groups[body["id"]] = {"displayName": name, "members": set()}
    elif r < 0.72:
        gid = rng.choice(list(groups)); uid = rng.choice(live)
        s, _ = call("PATCH", f"/Groups/{gid}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}]}, (200, 204))
        if s in (200, 204): groups[gid]["members"].add(uid)
    elif r < 0.80:
        gid = rng.choice(list(groups))
        if groups[gid]["members"]:
            uid = rng.choice(sorted(groups[gid]["members"]))
            s, _ = call("PATCH", f"/Groups/{gid}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "remove", "path": f'members[value eq "{uid}"]'}]}, (200, 204))
            if s in (200, 204): groups[gid]["members"].discard(uid)
    elif r < 0.82:
        gid = rng.choice(list(groups))
        s, _ = call("DELETE", f"/Groups/{gid}", None, (204,))
        if s == 204: del groups[gid]
    elif r < 0.92:
        u = users[rng.choice(live)]
        s, body = call("GET", "/Users?filter=" + urllib.parse.quote(f'userName eq "{u["userName"]}"'))
        if body and body.get("totalResults") != 1:
            stats["unexpected"].append(f"filter for {u['userName']} found {body.get('totalResults')}")
    else:
        call("GET", "/Groups?excludedAttributes=members&count=50")

start = time.time(); next_at = start
last_sample = 0
# The IdP changes at second 30 of each wall-clock minute, so that the sync at second 0
# sees a settled state. Epoch k is the k-th such change; some epochs are faults.
FAULTS = {2: "503", 4: "empty", 6: "429"}
phase0 = int((start - 30) // 60)
epoch_k = -1
fault_checks = []

def idp_side_intact():
    """After a faulty pull: nothing the IdP manages was deleted or deactivated."""
    _, body = call("GET", "/Groups?filter=" + urllib.parse.quote('displayName eq "LLM Soak All"'))
    members = len(body["Resources"][0].get("members", [])) if body and body.get("Resources") else 0
    _, body = call("GET", "/Users?count=1000&filter=" + urllib.parse.quote('userName sw "staff" and active eq true'))
    active = body.get("totalResults") if body else None
    return members, active
while time.time() - start < DURATION:
    now = time.time()
    k = int((now - 30) // 60) - phase0
    if k != epoch_k:
        if epoch_k in FAULTS and epoch_k >= 2:
            members, active = idp_side_intact()
            fault_checks.append((FAULTS[epoch_k], members, active))
            if (members, active) != (30, 30):
                problems_during.append(f"after a {FAULTS[epoch_k]} pull: 'LLM Soak All' has {members} members, {active} staff active")
        epoch_k = k
        with idp.lock:
            idp.fault = FAULTS.get(k)
            if idp.fault is None: idp.epoch = k
    if now - last_sample >= 5:
        memory.append((now - start, rss_kb())); last_sample = now
    action()
    next_at += 1.0 / RATE
    delay = next_at - time.time()
    if delay > 0: time.sleep(delay)

# ---------------------------------------------------------------- converge and compare
with idp.lock:
    idp.fault = None; idp.epoch = 1000; final_epoch = 1000; asked = time.time()
deadline = time.time() + 150
while time.time() < deadline:
    with idp.lock:
        done = [t for t, e in idp.good_pulls if e == final_epoch and t > asked]
    if done: break
    time.sleep(1)
time.sleep(5)  # let that sync's apply finish

def all_pages(path):
    out, start_index = [], 1
    while True:
        sep = "&" if "?" in path else "?"
        s, body = call("GET", f"{path}{sep}startIndex={start_index}&count=500")
        out += body["Resources"]
        if start_index + len(body["Resources"]) > body["totalResults"] or not body["Resources"]:
            return out
        start_index += len(body["Resources"])

server_users = {u["id"]: u for u in all_pages("/Users")}
server_groups = {g["id"]: g for g in all_pages("/Groups")}
problems = list(problems_during)
scim_users = {i: u for i, u in server_users.items() if u["userName"].startswith("scim")}
if set(scim_users) != set(users):
    problems.append(f"SCIM users differ: missing {set(users) - set(scim_users)}, extra {set(scim_users) - set(users)}")
for uid, want in users.items():
    got = scim_users.get(uid)
    if got and (got.get("displayName") != want["displayName"] or got.get("active") != want["active"]):
        problems.append(f"user {want['userName']}: want {want}, got displayName={got.get('displayName')} active={got.get('active')}")
scim_groups = {i: g for i, g in server_groups.items() if g["displayName"].startswith("SCIM Soak")}
if set(scim_groups) != set(groups):
    problems.append(f"SCIM groups differ: missing {set(groups) - set(scim_groups)}, extra {set(scim_groups) - set(groups)}")
for gid, want in groups.items():
    got = scim_groups.get(gid)
    members = {m["value"] for m in (got or {}).get("members", [])}
    if got and (members != want["members"] or got["displayName"] != want["displayName"]):
        problems.append(f"group {want['displayName']}: members want {sorted(want['members'])} got {sorted(members)}")
# The IdP side: both managed groups, exactly the final epoch's members, all staff active.
by_name = {g["displayName"]: g for g in server_groups.values()}
staff = {u["userName"]: u for u in server_users.values() if u["userName"].startswith("staff")}
if len(staff) != 30 or not all(u.get("active") for u in staff.values()):
    problems.append(f"IdP users: {len(staff)} present, inactive: {[n for n, u in staff.items() if not u.get('active')]}")
name_of = {u["id"]: u["userName"] for u in server_users.values()}
for gname, want in [("LLM Soak All", {u["userPrincipalName"] for u in IDP_USERS}),
                    ("LLM Soak Rotating", {IDP_USERS[i]["userPrincipalName"] for i in idp.rotating(final_epoch)})]:
    g = by_name.get(gname)
    got = {name_of.get(m["value"]) for m in (g or {}).get("members", [])}
    if g is None or got != want:
        problems.append(f"{gname}: want {sorted(want)}, got {sorted(got) if g else 'no such team'}")
if "Not Managed" in by_name:
    problems.append("the unmanaged IdP group was synced")

daemon.send_signal(signal.SIGTERM); daemon.wait(timeout=30)

q = max(1, len(memory) // 4)
early = sum(k for _, k in memory[:q]) / q
late = sum(k for _, k in memory[-q:]) / q
peak = max(k for _, k in memory)
flat = late <= early * 1.25 + 10_240
print()
print("== soak summary")
print(f"duration            {DURATION} s at {RATE} requests/s")
print(f"SCIM requests       {stats['requests']} ({stats['expected_errors']} expected errors: 409/404)")
print(f"unexpected answers  {len(stats['unexpected'])}")
for line in stats["unexpected"][:20]: print("   ", line)
print(f"IdP requests        {idp.requests} (faults injected: {idp.faults_served} answers; minutes {sorted(FAULTS)} = {[FAULTS[k] for k in sorted(FAULTS)]})")
print(f"good IdP pulls      {len(idp.good_pulls)}")
print(f"after faulty pulls  {fault_checks or 'none in this run (needs SOAK_SECONDS >= 300)'} (fault, 'LLM Soak All' members, staff active; want 30, 30)")
print(f"final state         {len(users)} SCIM users, {len(groups)} SCIM groups, 30 IdP users, 2 IdP teams")
print(f"memory (RSS)        first quarter {early/1024:.1f} MiB, last quarter {late/1024:.1f} MiB, peak {peak/1024:.1f} MiB: {'flat' if flat else 'GROWING'}")
print(f"state vs model      {'equal' if not problems else 'DIFFERENT'}")
for p in problems[:20]: print("   ", p)
ok = not problems and not stats["unexpected"] and flat and daemon.returncode == 0
print(f"result              {'PASS' if ok else 'FAIL'} (data lost: {'none' if not problems else 'see above'})")
sys.exit(0 if ok else 1)
PY
