#!/usr/bin/env bash
# Soak run: mixed SCIM traffic at a steady rate against the real daemon for a bounded
# time, with a scheduled IdP sync every minute from a local mock of Microsoft Graph
# that also injects faults (a 503 storm, a 429 storm, an empty answer) and goes down
# for several minutes (503 to everything, then connections refused). The daemon is
# restarted on the same database during the run: SIGTERM twice (once during the
# outage), SIGKILL twice at random moments (the first in the middle of a write). A
# person on call rejects the plan the guard keeps for review when the IdP answers with
# empty groups (removals are held until someone decides). A
# model of the expected state is kept as the traffic goes, across the restarts; at the
# end the daemon's state must equal it, resident memory must be flat, the database
# must have levelled off (runs of 30 minutes or more), and no response may be an
# unexpected error.
#
#   scripts/soak.sh                      # 3600 s at 20 requests/s
#   SOAK_SECONDS=300 SOAK_RATE=50 scripts/soak.sh
#
# Environment: SOAK_SECONDS (3600), SOAK_RATE (20 requests/s), SOAK_SEED (the moments
# of the kills; default: from the clock, printed), SCIMSYNC_BIN (default: builds and
# uses target/release/scimsync), SOAK_KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SCIMSYNC_BIN:-}" ]; then
    cargo build --release --bin scimsync >&2
    SCIMSYNC_BIN="$PWD/target/release/scimsync"
fi
WORK="$(mktemp -d)"
trap '[ "${SOAK_KEEP:-0}" = 1 ] && echo "work directory: $WORK" || rm -rf "$WORK"' EXIT

export SCIMSYNC_BIN WORK
python3 - <<'PY'
import atexit, datetime, http.client, http.server, json, os, random, re, signal, sqlite3, statistics
import subprocess, sys, threading, time
import urllib.request, urllib.error, urllib.parse

BIN = os.environ["SCIMSYNC_BIN"]
WORK = os.environ["WORK"]
DURATION = int(os.environ.get("SOAK_SECONDS", "3600"))
RATE = float(os.environ.get("SOAK_RATE", "20"))
SEED = int(os.environ.get("SOAK_SEED") or time.time_ns() % 10**6)
rng = random.Random(7)
# Apart from the traffic's, so that the traffic is the same whatever the kills do.
krng = random.Random(SEED)
# The SCIM population levels off at these, so that the database can too: past them a
# create becomes a delete.
USER_CAP, GROUP_CAP = 1000, 300

# ---------------------------------------------------------------- the mock IdP
IDP_USERS = [{"id": f"idp-{i}", "userPrincipalName": f"staff{i}@soak.example",
              "mail": f"staff{i}@soak.example", "displayName": f"Staff {i}",
              "givenName": "Staff", "surname": str(i), "accountEnabled": True}
             for i in range(30)]

class Idp:
    """Group "LLM Soak All" holds every IdP user; "LLM Soak Rotating" a subset that
    changes each epoch. `fault` makes every answer fail or come back empty; `down`
    is the outage, which the token endpoint shares."""
    def __init__(self):
        self.lock = threading.Lock()
        self.epoch = 0
        self.fault = None          # None | "503" | "429" | "empty"
        self.down = None           # None | "503" | "refused"
        self.requests = 0
        self.faults_served = 0
        self.outage_answers = 0
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
    def outage(self):
        with idp.lock:
            if idp.down is None: return False
            idp.requests += 1; idp.outage_answers += 1
        self.reply(503, {"error": {"code": "ServiceUnavailable"}})
        return True
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.outage(): return
        self.reply(200, {"access_token": "mock", "token_type": "Bearer", "expires_in": 3600})
    def do_GET(self):
        if self.outage(): return
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

def serve_idp(port):
    """The mock's listener; closed during the second half of the outage, so that the
    daemon meets a refused connection, and opened again on the same port."""
    for _ in range(50):
        try:
            srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
            break
        except OSError:
            time.sleep(0.2)
    else:
        sys.exit(f"cannot listen on 127.0.0.1:{port} again after the outage")
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv

server = serve_idp(0)
IDP_PORT = server.server_address[1]
idp_url = f"http://127.0.0.1:{IDP_PORT}"

# ---------------------------------------------------------------- the daemon
DB_FILE = f"{WORK}/scimsync.db"
db = f"sqlite://{DB_FILE}"
env = {"PATH": os.environ["PATH"], "SCIMSYNC_DATABASE_URL": db,
       "SCIMSYNC_CONFIG": f"{WORK}/config.toml", "SCIMSYNC_LISTEN": "127.0.0.1:0"}
# [audit] retain cannot be shorter than a day (config.rs refuses it), so the soak
# stands in for the clock instead: every minute it dates the entries older than
# AGE_AFTER two days back, and the daemon's own prune (every minute, in batches)
# deletes them. The log then holds about AGE_AFTER of entries and levels off within
# the hour, as a year's retain would level off within the year.
AGE_AFTER = 600
# The rotating team replaces up to 10 of the IdP's 40 memberships in one minute; the
# default ratio (0.2 of 40: 8) would refuse a healthy minute now and then, and a refused
# plan holds every later removal until someone decides about it. 0.3 lets the rotation
# through and still refuses the empty answer (40 of 40).
with open(f"{WORK}/config.toml", "w") as f:
    f.write(f'''
[safety]
max_membership_removal_ratio = 0.3

[audit]
retain = "1d"
prune_every = "1m"
prune_batch = 500

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

class Down(Exception):
    """No answer from the daemon: a connection refused or cut off, or a timeout."""

lifecycle = threading.Lock()   # a kill from the timer thread never meets a half-started daemon
daemon = None
BASE = None
lives = []        # (run time at start, how the previous one ended) per daemon process
restarts = []     # (run time, signal, how the process exited, seconds until serving again)
start = time.time()

def start_daemon(reason):
    global daemon, BASE
    n = len(lives)
    logname = f"{WORK}/daemon-{n}.log"
    log = open(logname, "w")
    proc = subprocess.Popen([BIN, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    addr = None
    for _ in range(300):
        time.sleep(0.1)
        m = re.search(r"listening.*?addr=(\S+)", open(logname).read())
        if m: addr = m.group(1); break
        if proc.poll() is not None: break
    if not addr:
        proc.kill()
        print(open(logname).read()); sys.exit(f"daemon did not start ({reason})")
    daemon, BASE = proc, f"http://{addr}/scim/v2"
    lives.append((time.time() - start, reason))

def stop_daemon(sig):
    daemon.send_signal(sig)
    try:
        return daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill(); daemon.wait()
        return "hung; killed after 60 s"

@atexit.register
def _no_orphans():
    if daemon is not None and daemon.poll() is None: daemon.kill()

def restart(sig):
    """SIGTERM between requests; the process must exit 0."""
    with lifecycle:
        t0 = time.time()
        code = stop_daemon(sig)
        start_daemon(sig.name)
        restarts.append((t0 - start, sig.name, code, time.time() - t0))
        if code != 0:
            problems_during.append(f"{sig.name} at {t0 - start:.0f} s: the daemon exited with {code}")

def kill_at(delay, mid_write):
    """SIGKILL from another thread, at a moment the driver does not choose; with
    `mid_write`, once a write has been sent and its answer has not come back."""
    def fire():
        give_up = time.time() + 5
        while mid_write and pending is None and time.time() < give_up:
            time.sleep(0.0005)
        # A few milliseconds on, the daemon may be before, inside or after the write's
        # transaction: each outcome must settle as all or nothing.
        if mid_write: time.sleep(krng.uniform(0, 0.005))
        with lifecycle:
            kills.append((time.time() - start, pending is not None))
            daemon.send_signal(signal.SIGKILL)
    t = threading.Timer(delay, fire); t.daemon = True; t.start()
    return t
kills = []        # (run time, whether a write was in flight)

def call(method, path, body=None, expect=(200,)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={
        "authorization": f"Bearer {token}", "content-type": "application/scim+json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as e:
        stats["no_answer"] += 1
        raise Down(f"{method} {path}: {e}")
    stats["requests"] += 1
    if status not in expect:
        stats["unexpected"].append(f"{method} {path} -> {status} {text[:200]}")
    elif status >= 400:
        stats["expected_errors"] += 1
    return status, (json.loads(text) if text.strip().startswith("{") else None)

# A write sent whose answer has not come back: (kind, key, model before, model after).
# After a kill it is settled by reading the store, which must show one or the other.
pending = None

def write(kind, key, before, after, method, path, body, expect):
    global pending
    pending = (kind, key, before, after)
    answer = call(method, path, body, expect)
    pending = None
    return answer

def rss_kb():
    try:
        for line in open(f"/proc/{daemon.pid}/status"):
            if line.startswith("VmRSS:"): return int(line.split()[1])
    except OSError:
        pass
    return 0

# ---------------------------------------------------------------- the model
stats = {"requests": 0, "expected_errors": 0, "no_answer": 0, "unexpected": []}
problems_during = []
users = {}    # id -> {"userName", "displayName", "active"}
groups = {}   # id -> {"displayName", "members": set(ids)}
serial = 0
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

def new_user():
    global serial
    serial += 1
    name = f"scim{serial}@soak.example"
    want = {"userName": name, "displayName": f"Scim {serial}", "active": True}
    s, body = write("user", name, None, want, "POST", "/Users",
                    {"userName": name, "displayName": f"Scim {serial}",
                     "emails": [{"value": name, "primary": True}]}, (201,))
    if s == 201: users[body["id"]] = want

def delete_user(uid):
    s, _ = write("user", uid, users[uid], None, "DELETE", f"/Users/{uid}", None, (204,))
    if s == 204: forget_user(uid)
    call("GET", f"/Users/{uid}", None, (404,))

def forget_user(uid):
    del users[uid]
    for g in groups.values(): g["members"].discard(uid)

def delete_group(gid):
    s, _ = write("group", gid, groups[gid], None, "DELETE", f"/Groups/{gid}", None, (204,))
    if s == 204: del groups[gid]

def action():
    r = rng.random()
    live = list(users)
    if len(live) < 10:
        new_user()
    elif r < 0.15:
        if len(live) < USER_CAP: new_user()
        else: delete_user(rng.choice(live))
    elif r < 0.25:  # a duplicate userName, differing in case: 409
        u = users[rng.choice(live)]
        call("POST", "/Users", {"userName": u["userName"].upper()}, (409,))
    elif r < 0.40:
        uid = rng.choice(live); name = f"Renamed {rng.randrange(10**6)}"
        want = dict(users[uid], displayName=name)
        s, _ = write("user", uid, users[uid], want, "PATCH", f"/Users/{uid}", {"schemas": [PATCH],
                     "Operations": [{"op": "replace", "path": "displayName", "value": name}]}, (200, 204))
        if s in (200, 204): users[uid] = want
    elif r < 0.47:
        uid = rng.choice(live); active = not users[uid]["active"]
        want = dict(users[uid], active=active)
        s, _ = write("user", uid, users[uid], want, "PATCH", f"/Users/{uid}", {"schemas": [PATCH],
                     "Operations": [{"op": "Replace", "value": {"active": "True" if active else "False"}}]}, (200, 204))
        if s in (200, 204): users[uid] = want
    elif r < 0.52:
        delete_user(rng.choice(live))
    elif r < 0.57 or not groups:
        if len(groups) >= GROUP_CAP:
            return delete_group(rng.choice(list(groups)))
        name = f"SCIM Soak Group {rng.randrange(10**9)}"
        want = {"displayName": name, "members": set()}
        s, body = write("group", name, None, want, "POST", "/Groups", {"displayName": name}, (201,))
        if s == 201: groups[body["id"]] = want
    elif r < 0.72:
        gid = rng.choice(list(groups)); uid = rng.choice(live)
        want = dict(groups[gid], members=groups[gid]["members"] | {uid})
        s, _ = write("group", gid, groups[gid], want, "PATCH", f"/Groups/{gid}", {"schemas": [PATCH],
                     "Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}]}, (200, 204))
        if s in (200, 204): groups[gid] = want
    elif r < 0.80:
        gid = rng.choice(list(groups))
        if groups[gid]["members"]:
            uid = rng.choice(sorted(groups[gid]["members"]))
            want = dict(groups[gid], members=groups[gid]["members"] - {uid})
            s, _ = write("group", gid, groups[gid], want, "PATCH", f"/Groups/{gid}", {"schemas": [PATCH],
                         "Operations": [{"op": "remove", "path": f'members[value eq "{uid}"]'}]}, (200, 204))
            if s in (200, 204): groups[gid] = want
    elif r < 0.82:
        delete_group(rng.choice(list(groups)))
    elif r < 0.92:
        u = users[rng.choice(live)]
        s, body = call("GET", "/Users?filter=" + urllib.parse.quote(f'userName eq "{u["userName"]}"'))
        if body and body.get("totalResults") != 1:
            stats["unexpected"].append(f"filter for {u['userName']} found {body.get('totalResults')}")
    else:
        call("GET", "/Groups?excludedAttributes=members&count=50")

def read_back(kind, key):
    """The store's view of one user or group, in the model's shape (None: absent);
    `key` is an id, or the name a create used."""
    if kind == "user":
        if "@" in key:
            _, body = call("GET", "/Users?filter=" + urllib.parse.quote(f'userName eq "{key}"'))
            found = body["Resources"]
        else:
            s, body = call("GET", f"/Users/{key}", None, (200, 404))
            found = [body] if s == 200 else []
        return [(u["id"], {"userName": u["userName"], "displayName": u.get("displayName"),
                           "active": u.get("active")}) for u in found]
    if key.startswith("SCIM Soak"):
        _, body = call("GET", "/Groups?filter=" + urllib.parse.quote(f'displayName eq "{key}"'))
        found = body["Resources"]
    else:
        s, body = call("GET", f"/Groups/{key}", None, (200, 404))
        found = [body] if s == 200 else []
    return [(g["id"], {"displayName": g["displayName"],
                       "members": {m["value"] for m in g.get("members", [])}}) for g in found]

settled = {"applied": 0, "not applied": 0}

def settle(kind, key, before, after):
    """The write in flight when the daemon went away happened entirely or not at all."""
    found = read_back(kind, key)
    state = found[0][1] if len(found) == 1 else None
    table = users if kind == "user" else groups
    if len(found) <= 1 and state == after:
        settled["applied"] += 1
        if after is None: forget_user(key) if kind == "user" else table.pop(key)
        elif before is None: table[found[0][0]] = after
        else: table[key] = after
    elif len(found) <= 1 and state == before:
        settled["not applied"] += 1
    else:
        problems_during.append(f"{kind} {key} after a kill: neither before ({before}) nor after ({after}): {found}")

def recover(why):
    """After a request got no answer: a kill expected, or a fault of the daemon's."""
    global pending
    for _ in range(100):
        if daemon.poll() is not None: break
        time.sleep(0.1)
    code = daemon.poll()
    if code is None:
        stats["unexpected"].append(f"no answer from a running daemon: {why}")
    else:
        with lifecycle:
            if code != -signal.SIGKILL:
                problems_during.append(f"the daemon died by itself ({code}) at {time.time() - start:.0f} s")
            t0 = time.time()
            start_daemon("SIGKILL")
            restarts.append((t0 - start, "SIGKILL", code, time.time() - t0))
    if pending:
        doubt, pending = pending, None
        settle(*doubt)

# ---------------------------------------------------------------- the clock's stand-in, the database's size
aging = sqlite3.connect(DB_FILE, timeout=30, isolation_level=None)
def ts(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
aged = 0
def age_audit():
    """Entries older than AGE_AFTER are dated two days back: past the 1d retain."""
    global aged
    now = time.time()
    for table, col in (("audit_log", "at"), ("deleted_api_keys", "deleted")):
        try:
            cur = aging.execute(f"UPDATE {table} SET {col} = strftime('%Y-%m-%dT%H:%M:%S', {col}, '-2 days')"
                                f" || substr({col}, 20) WHERE {col} < ? AND {col} >= ?",
                                (ts(now - AGE_AFTER), ts(now - 86400)))
            aged += cur.rowcount
        except sqlite3.OperationalError:
            pass   # busy: the next minute dates these back as well

def db_bytes():
    """The file and the WAL, apart: the WAL keeps its high-water mark until a clean stop."""
    return tuple(os.path.getsize(DB_FILE + x) if os.path.exists(DB_FILE + x) else 0 for x in ("", "-wal"))

def audit_rows():
    return aging.execute("SELECT count(*) FROM audit_log").fetchall()[0][0]

memory = []   # (run time, process number, seconds since it started, RSS kB)
sizes = []    # (run time, (database bytes, WAL bytes), audit_log rows)

# ---------------------------------------------------------------- the schedule
D = DURATION
OUTAGE_AT = 0.33 * D
OUTAGE_LEN = min(300, max(60, int(0.1 * D)))
# Restarts in the first 60 % only, so that the last quarter and the last process's
# own first and last quarters say whether memory grows with age.
TERM_AT = [0.12 * D, OUTAGE_AT + 0.4 * OUTAGE_LEN]
KILL_AT = [(krng.uniform(0.20, 0.28) * D, True), (krng.uniform(0.55, 0.60) * D, False)]
outage = {"refused_at": OUTAGE_AT + OUTAGE_LEN / 2, "end": OUTAGE_AT + OUTAGE_LEN,
          "state": "before", "checked": None, "catch_up": None, "requests": 0}

def pending_plans():
    """Plans kept for review (quarantined_plans) that await a decision: (id, reason)."""
    try:
        return aging.execute("SELECT id, reason FROM quarantined_plans WHERE decided IS NULL").fetchall()
    except sqlite3.OperationalError:
        return None   # busy: asked again

quarantine_checks = []   # (fault, plan id or None, how the operator's reject ended)

def on_call_operator(fault):
    """What the person on call does after a fault: a plan the guard kept for a bogus
    answer is rejected (the IdP's next sync plans afresh). A fault that is not an
    answer (503, 429) must keep nothing."""
    deadline = time.time() + 20
    plans = pending_plans()
    while fault == "empty" and not plans and time.time() < deadline:
        time.sleep(1); plans = pending_plans()
    if fault != "empty":
        if plans: problems_during.append(f"a {fault} fault kept plans {plans}")
        quarantine_checks.append((fault, None, "nothing kept"))
        return
    if not plans:
        problems_during.append("the empty answer was not kept for review (no quarantined plan)")
        quarantine_checks.append((fault, None, "NOT kept"))
        return
    for plan_id, reason in plans:
        done = subprocess.run([BIN, "plans", "reject", str(plan_id), "--by", "soak-operator"],
                              env=env, capture_output=True, text=True)
        quarantine_checks.append((fault, plan_id, "rejected" if done.returncode == 0 else f"reject exit {done.returncode}"))
        if done.returncode != 0:
            problems_during.append(f"plans reject {plan_id}: exit {done.returncode}: {done.stderr.strip()[:300]}")

def idp_side_intact():
    """After a faulty pull: nothing the IdP manages was deleted or deactivated."""
    _, body = call("GET", "/Groups?filter=" + urllib.parse.quote('displayName eq "LLM Soak All"'))
    members = len(body["Resources"][0].get("members", [])) if body and body.get("Resources") else 0
    _, body = call("GET", "/Users?count=1000&filter=" + urllib.parse.quote('userName sw "staff" and active eq true'))
    active = body.get("totalResults") if body else None
    return members, active

def rotating_team():
    _, body = call("GET", "/Groups?filter=" + urllib.parse.quote('displayName eq "LLM Soak Rotating"'))
    g = body["Resources"][0] if body and body.get("Resources") else {}
    ids = {m["value"] for m in g.get("members", [])}
    _, body = call("GET", "/Users?count=1000&filter=" + urllib.parse.quote('userName sw "staff"'))
    return sorted(int(u["userName"][5:].split("@")[0]) for u in body["Resources"] if u["id"] in ids)

def outage_step(now):
    """503 to everything, then connections refused, then back; the IdP's rotating
    group goes on changing meanwhile, and the daemon must catch up with it."""
    global server
    t = now - start
    if outage["state"] == "before" and t >= OUTAGE_AT:
        with idp.lock: idp.down = "503"
        outage["state"], outage["started"], outage["last_good"] = "503", now, len(idp.good_pulls)
    elif outage["state"] == "503" and t >= outage["refused_at"]:
        with idp.lock: idp.down = "refused"
        server.shutdown(); server.server_close()
        outage["state"] = "refused"
    elif outage["state"] == "refused" and t >= outage["end"]:
        # Before the IdP is back: nothing it manages went while it was away.
        outage["checked"] = (idp_side_intact(), len(rotating_team()))
        if outage["checked"] != ((30, 30), 10):
            problems_during.append(f"at the end of the outage: (members, active), rotating = {outage['checked']}")
        server = serve_idp(IDP_PORT)
        with idp.lock:
            idp.down = None
            outage["requests"] = idp.outage_answers
        outage["state"], outage["recovered"] = "catching up", now
    elif outage["state"] == "catching up":
        with idp.lock:
            after = [(p, e) for p, e in idp.good_pulls if p > outage["recovered"]]
        if after and now - after[0][0] > 5:
            got, want = rotating_team(), idp.rotating(after[0][1])
            outage["catch_up"] = after[0][0] - outage["recovered"]
            outage["state"] = "done"
            if got != want:
                problems_during.append(f"after the outage: 'LLM Soak Rotating' has {got}, the IdP {want}")
        elif now - outage["recovered"] > 600:
            problems_during.append("no good pull within 10 minutes of the IdP's return")
            outage["state"] = "done"

# ---------------------------------------------------------------- the run
start_daemon("start")
timers = [kill_at(t, mid) for t, mid in KILL_AT]
next_at = start
last_sample = last_size = last_age = 0
# The IdP changes at second 30 of each wall-clock minute, so that the sync at second 0
# sees a settled state. Epoch k is the k-th such change; some epochs are faults.
FAULTS = {2: "503", 4: "empty", 6: "429"}
phase0 = int((start - 30) // 60)
epoch_k = -1
fault_checks = []
while time.time() - start < DURATION:
    now = time.time()
    try:
        k = int((now - 30) // 60) - phase0
        if k != epoch_k:
            if epoch_k in FAULTS and epoch_k >= 2:
                members, active = idp_side_intact()
                fault_checks.append((FAULTS[epoch_k], members, active))
                if (members, active) != (30, 30):
                    problems_during.append(f"after a {FAULTS[epoch_k]} pull: 'LLM Soak All' has {members} members, {active} staff active")
                on_call_operator(FAULTS[epoch_k])
            epoch_k = k
            with idp.lock:
                idp.fault = FAULTS.get(k)
                if idp.fault is None: idp.epoch = k
        outage_step(now)
        if TERM_AT and now - start >= TERM_AT[0]:
            TERM_AT.pop(0); restart(signal.SIGTERM)
        if now - last_sample >= 5 and daemon.poll() is None:
            rss = rss_kb()
            if rss: memory.append((now - start, len(lives), now - start - lives[-1][0], rss))
            last_sample = now
        if now - last_age >= 60:
            age_audit(); last_age = now
        if now - last_size >= 30:
            sizes.append((now - start, db_bytes(), audit_rows())); last_size = now
        action()
    except Down as e:
        recover(str(e))
    next_at += 1.0 / RATE
    delay = next_at - time.time()
    if delay > 0: time.sleep(delay)
    else: next_at = time.time()   # after a restart, no burst to make up for the pause

# ---------------------------------------------------------------- converge and compare
for t in timers: t.cancel()
if outage["state"] == "refused":   # a run too short for the outage to end
    server = serve_idp(IDP_PORT)
with idp.lock:
    idp.fault = idp.down = None; idp.epoch = 1000; final_epoch = 1000; asked = time.time()
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
kept_all = aging.execute("SELECT id, reason, decision, decided_by FROM quarantined_plans ORDER BY id").fetchall()
rejected_ids = {i for _, i, how in quarantine_checks if how == "rejected"}
unexpected_plans = [p for p in kept_all if p[0] not in rejected_ids]
if unexpected_plans:
    problems.append(f"plans kept that no fault explains (the guard refused a healthy answer?): {unexpected_plans[:5]}")
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
if D >= 300 and outage["catch_up"] is None:
    problems.append(f"the outage's catch-up was not seen (state: {outage['state']})")

# Retention: what the prune was given (dated back more than two minutes ago) is gone,
# and what is inside the window was kept.
now = time.time()
past_retain = aging.execute("SELECT count(*) FROM audit_log WHERE at < ?", (ts(now - 2 * 86400 - AGE_AFTER - 180),)).fetchall()[0][0]
inside = aging.execute("SELECT count(*) FROM audit_log WHERE at >= ?", (ts(now - AGE_AFTER + 60),)).fetchall()[0][0]
if past_retain or not inside:
    problems.append(f"audit log: {past_retain} entries past retain left, {inside} inside the window")
sizes.append((now - start, db_bytes(), audit_rows()))

code = stop_daemon(signal.SIGTERM)
sizes.append((time.time() - start, db_bytes(), audit_rows()))
logs = "".join(open(f"{WORK}/daemon-{i}.log").read() for i in range(len(lives)))
pruned = sum(int(m) for m in re.findall(r"pruned audit entries.*?audit_log=(\d+)", logs))
backoffs = len(re.findall(r"backing off before the next attempt", logs))
panics = len(re.findall(r"panicked", logs))
if panics: problems.append(f"{panics} panics in the daemon's log")

def median_kb(rows):
    return statistics.median(k for *_, k in rows) if rows else 0
# Each process's first minute is left out: a fresh one has not filled its caches yet.
warm = [m for m in memory if m[2] >= 60]
def quarter(rows, first):
    q = [m for m in rows if (m[0] < D / 4 if first else m[0] >= 3 * D / 4)]
    # A short run's first quarter may hold no process older than a minute.
    return q or [m for m in memory if (m[0] < D / 4 if first else m[0] >= 3 * D / 4)]
early = median_kb(quarter(warm, True))
late = median_kb(quarter(warm, False))
last = [m for m in warm if m[1] == len(lives)]
span = (last[-1][2] - last[0][2]) if last else 0
own_early = median_kb([m for m in last if m[2] < last[0][2] + span / 4])
own_late = median_kb([m for m in last if m[2] >= last[0][2] + 3 * span / 4])
peak = max(k for *_, k in memory)
flat = late <= early * 1.25 + 10_240 and own_late <= own_early * 1.25 + 10_240
def mib(b): return sum(b) / 2**20
mid = min(sizes, key=lambda s: abs(s[0] - D / 2))
size_max = max(mib(b) for _, b, _ in sizes)
# Judged from half-way on: by then the population is at its caps and the oldest
# entries have been going for a while. Against the last sample before the stop, whose
# WAL is at its high-water mark as half-way's is; the stop empties it into the file.
levelled = mib(sizes[-2][1]) <= mib(mid[1]) * 1.2 + 1 if D >= 1800 else None

print()
print("== soak summary")
print(f"duration            {DURATION} s at {RATE} requests/s (seed {SEED})")
print(f"SCIM requests       {stats['requests']} ({stats['expected_errors']} expected errors: 409/404; {stats['no_answer']} cut off by a kill)")
print(f"unexpected answers  {len(stats['unexpected'])}")
for line in stats["unexpected"][:20]: print("   ", line)
print(f"restarts            {len(restarts)}: " + ", ".join(f"{sig} at {t:.0f} s (exit {c}, serving again in {d:.1f} s)" for t, sig, c, d in restarts))
print(f"kills               " + ", ".join(f"at {t:.0f} s, {'a write in flight' if w else 'between requests'}" for t, w in kills)
      + f"; writes in doubt settled: {settled['applied']} applied, {settled['not applied']} not applied")
print(f"IdP requests        {idp.requests} (faults injected: {idp.faults_served} answers; minutes {sorted(FAULTS)} = {[FAULTS[k] for k in sorted(FAULTS)]})")
print(f"good IdP pulls      {len(idp.good_pulls)}")
print(f"after faulty pulls  {fault_checks or 'none in this run (needs SOAK_SECONDS >= 300)'} (fault, 'LLM Soak All' members, staff active; want 30, 30)")
print(f"kept for review     {[(f, i, how) for f, i, how in quarantine_checks] or 'none in this run'} (fault, quarantined plan, the on-call operator's decision); {len(kept_all)} plans kept in all")
print(f"IdP outage          {OUTAGE_AT:.0f}-{OUTAGE_AT + OUTAGE_LEN:.0f} s ({OUTAGE_LEN / 60:.1f} min: 503 for half, refused for half); "
      f"{outage['requests']} requests answered 503; {backoffs} backing-off warnings; at its end {outage['checked']} ((members, active), rotating; want ((30, 30), 10)); "
      f"caught up {'%.0f s after' % outage['catch_up'] if outage['catch_up'] is not None else 'NOT'} the IdP's return")
print(f"final state         {len(users)} SCIM users, {len(groups)} SCIM groups, 30 IdP users, 2 IdP teams")
print(f"memory (RSS)        median first quarter {early/1024:.1f} MiB, last quarter {late/1024:.1f} MiB; last process "
      f"({span / 60:.0f} min) {own_early/1024:.1f} -> {own_late/1024:.1f} MiB; peak {peak/1024:.1f} MiB: {'flat' if flat else 'GROWING'}")
print(f"database            start {mib(sizes[0][1]):.1f} MiB, half-way {mib(mid[1]):.1f} MiB, max {size_max:.1f} MiB, before the stop {mib(sizes[-2][1]):.1f} MiB, "
      f"after it {mib(sizes[-1][1]):.1f} MiB (file + WAL): "
      + {True: "levelled off", False: "GROWING", None: "not judged (needs SOAK_SECONDS >= 1800)"}[levelled])
step = max(1, len(sizes) // 12)
shown = [sizes[i] for i in sorted(set(range(0, len(sizes), step)) | {len(sizes) - 2, len(sizes) - 1})]
print(f"database over time  " + ", ".join(f"{t/60:.0f} min {b[0]/2**20:.1f}+{b[1]/2**20:.1f} MiB/{a} audit" for t, b, a in shown))
print(f"audit log           {aged} entries dated back, {pruned} pruned by the daemon, {audit_rows()} left; max {max(a for *_, a in sizes)}")
print(f"state vs model      {'equal' if not problems else 'DIFFERENT'}")
for p in problems[:20]: print("   ", p)
ok = not problems and not stats["unexpected"] and flat and levelled is not False and code == 0
print(f"result              {'PASS' if ok else 'FAIL'} (data lost: {'none' if not problems else 'see above'})")
sys.exit(0 if ok else 1)
PY
