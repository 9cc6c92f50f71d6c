#!/usr/bin/env python3
"""Runs the peer, scim2-server's own `scim2-server` command (same WSGI app, same threaded
wsgiref server, same in-memory storage), optionally with its storage preloaded in-process
for the 100,000-user workloads, which would take the peer many minutes to receive over
HTTP. Preloading goes through the storage's own create(), as a POST would.

  peer_server.py [scim2-server arguments...]
  env BENCH_PEER_PRELOAD=USERS:POOL:EMPTY  preload USERS users (user{i:06d}@example.com),
      a group "bench big group" holding all of them, EMPTY empty groups, and POOL more users
      in no group; BENCH_PEER_IDS=FILE receives their ids as JSON before serving
      ({"user_ids", "pool_ids", "group_id", "empty_group_ids"}).
"""
import json
import os
import sys
import time

from scim2_models import Group, User
from scim2_server.memory import InMemoryStorage
from scim2_server.testserver import cli
from scim2_server.utils import load_default_resource_types


def user(prefix, i):
    name = f"{prefix}{i:06d}@example.com"
    return User.model_validate({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name, "externalId": f"{prefix}-ext-{i}",
        "name": {"givenName": "Bench", "familyName": f"User {i}"},
        "displayName": f"Bench User {i}",
        "emails": [{"value": name, "type": "work", "primary": True}], "active": True})


def group(name, members):
    return Group.model_validate({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name,
        "members": [{"value": m, "type": "User"} for m in members]})


class PreloadedStorage(InMemoryStorage):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        spec = os.environ.get("BENCH_PEER_PRELOAD")
        if not spec:
            return
        users, pool, empty = (int(x) for x in spec.split(":"))
        types = load_default_resource_types()
        started = time.monotonic()
        ids = [self.create(types["User"], user("user", i)).id for i in range(users)]
        pool_ids = [self.create(types["User"], user("pool", users + i)).id for i in range(pool)]
        big = self.create(types["Group"], group("bench big group", ids)).id
        empties = [self.create(types["Group"], group(f"bench empty group {e}", [])).id
                   for e in range(empty)]
        with open(os.environ["BENCH_PEER_IDS"], "w") as f:
            json.dump({"user_ids": ids, "pool_ids": pool_ids, "group_id": big,
                       "empty_group_ids": empties}, f)
        print(f"peer preloaded {users + pool} users in {time.monotonic() - started:.1f} s",
              file=sys.stderr, flush=True)


cli.InMemoryStorage = PreloadedStorage

if __name__ == "__main__":
    sys.argv[0] = "scim2-server"
    cli.main()
