#!/usr/bin/env python3
"""Seeds a SCIM server through its own API, concurrently, with the standard library only.

Creates USERS users (POST /Users, one request each, from THREADS keep-alive connections),
then one group holding the first MEMBERS of them (POST /Groups, then PATCH add in chunks),
then EMPTY empty groups. Writes what the workloads need as JSON:
{"user_ids": [...], "user_names": [...], "group_id": ..., "empty_group_ids": [...],
 "seconds": ..., "users_per_second": ...}

Usage: seed.py BASE_URL TOKEN OUT.json [--users N] [--members M] [--empty E] [--prefix P]
       [--threads T]
BASE_URL is the SCIM root, e.g. http://127.0.0.1:7643/scim/v2. An empty TOKEN sends none.
"""
import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

SCIM = "application/scim+json"


class Client:
    def __init__(self, base, token):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.path = u.hostname, u.port, u.path.rstrip("/")
        self.headers = {"Content-Type": SCIM, "Accept": SCIM}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.local = threading.local()
        self.retries = 0  # answers >= 500 and dropped connections retried (reported)
        self.retry_lock = threading.Lock()

    def retried(self):
        with self.retry_lock:
            self.retries += 1

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = self.local.c = http.client.HTTPConnection(self.host, self.port, timeout=120)
        return c

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(5):
            c = self.conn()
            try:
                c.request(method, self.path + path, body=data, headers=self.headers)
                r = c.getresponse()
                payload = r.read()
                if r.getheader("Connection", "").lower() == "close" or r.version == 10:
                    c.close()
                    self.local.c = None
                if r.status >= 500 and attempt < 4:
                    self.retried()
                    time.sleep(0.2 * (attempt + 1))
                    continue
                if r.status >= 300:
                    raise RuntimeError(f"{method} {path}: HTTP {r.status}: {payload[:500]!r}")
                return json.loads(payload) if payload else None
            except (ConnectionError, http.client.HTTPException, OSError):
                c.close()
                self.local.c = None
                if attempt == 4:
                    raise
                self.retried()
                time.sleep(0.1)


def user_body(prefix, i):
    name = f"{prefix}{i:06d}@example.com"
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "externalId": f"{prefix}-ext-{i}",
        "name": {"givenName": "Seed", "familyName": f"User {i}"},
        "displayName": f"Seed User {i}",
        "emails": [{"value": name, "type": "work", "primary": True}],
        "active": True,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("token")
    p.add_argument("out")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--members", type=int, default=5_000)
    p.add_argument("--empty", type=int, default=0)
    p.add_argument("--prefix", default="seed")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--chunk", type=int, default=500)
    a = p.parse_args()
    # Ctrl-C ends the run at once: otherwise the pool would first work through every
    # queued request (against servers bench.sh's cleanup is stopping).
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))

    client = Client(a.base, a.token)
    started = time.monotonic()
    ids = [None] * a.users

    def create(i):
        ids[i] = client.request("POST", "/Users", user_body(a.prefix, i))["id"]

    with ThreadPoolExecutor(a.threads) as pool:
        for f in [pool.submit(create, i) for i in range(a.users)]:
            f.result()
    users_done = time.monotonic()

    group = client.request(
        "POST",
        "/Groups",
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
         "displayName": f"{a.prefix} group of {a.members}"},
    )
    gid = group["id"]
    members = ids[: a.members]
    for start in range(0, len(members), a.chunk):
        chunk = members[start : start + a.chunk]
        client.request(
            "PATCH",
            f"/Groups/{gid}?excludedAttributes=members",
            {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
             "Operations": [{"op": "add", "path": "members",
                             "value": [{"value": m} for m in chunk]}]},
        )
    empty = []
    for e in range(a.empty):
        g = client.request(
            "POST",
            "/Groups",
            {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
             "displayName": f"{a.prefix} empty group {e}"},
        )
        empty.append(g["id"])
    seconds = time.monotonic() - started
    result = {
        "user_ids": ids,
        "user_names": [f"{a.prefix}{i:06d}@example.com" for i in range(a.users)],
        "group_id": gid,
        "empty_group_ids": empty,
        "seconds": round(seconds, 2),
        "users_per_second": round(a.users / max(users_done - started, 1e-9), 1),
        "retries": client.retries,
    }
    with open(a.out, "w") as f:
        json.dump(result, f)
    print(f"seeded {a.users} users ({result['users_per_second']}/s), a group of "
          f"{len(members)} members and {a.empty} empty groups in {seconds:.1f} s"
          + (f" ({client.retries} requests retried after a 5xx or a dropped connection)"
             if client.retries else ""),
          file=sys.stderr)


if __name__ == "__main__":
    main()
