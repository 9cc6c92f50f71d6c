#!/usr/bin/env python3
"""Generates desired-state snapshots (docs/snapshot.md) for the benchmarks. Deterministic:
the same arguments always give the same bytes.

  gen_snapshot.py scale [--users 100000] [--groups 10000] [--memberships 1000000]
                        [--change-pct 0] [--idp bench] > snapshot.json
      The reconcile scale benchmark. Ten "department" groups partition the users (so
      every user is in a group and the mock Graph's transitive members reach them all,
      each over several pages of 999); the other groups share the remaining memberships
      (90 or 91 members each, spread over the users by a stride). --change-pct 1 changes
      1% of it: 1% of the users renamed, 1% of the groups renamed, and 1% of the
      memberships moved (half removed, half added).

  gen_snapshot.py roster [--users 100000] [--pool 0] [--empty 3] [--idp bench]
      The SCIM benchmark's large store: USERS users all in one group ("bench big group"),
      EMPTY empty groups, and POOL more users in no group (members to add).

User i has external_id 00000000-0000-4000-8000-{i:012d} (a Graph-like object id),
userName user{i:06d}@example.com; group g has external_id 00000000-0000-4000-9000-{g:012d}.
"""
import argparse
import json
import sys

DEPARTMENTS = 10
STRIDE = 13  # coprime with 10^n: a stride walk never repeats a user before covering all


def user_id(i):
    return f"00000000-0000-4000-8000-{i:012d}"


def group_id(g):
    return f"00000000-0000-4000-9000-{g:012d}"


def user(i, renamed=False, prefix="user"):
    name = f"{prefix}{i:06d}@example.com"
    display = f"Bench User {i}" + (" (renamed)" if renamed else "")
    return {"external_id": user_id(i), "user_name": name, "email": name,
            "display_name": display, "given_name": "Bench", "family_name": f"User {i}",
            "active": True}


def scale_groups(users, groups, memberships):
    """[(display_name, [member indexes])] of the scale snapshot."""
    departments = min(DEPARTMENTS, groups)
    out = []
    for d in range(departments):
        lo, hi = d * users // departments, (d + 1) * users // departments
        out.append((f"Department {d:02d}", list(range(lo, hi))))
    small = groups - departments
    rest = max(memberships - users, 0)
    base, extra = (rest // small, rest % small) if small else (0, 0)
    for j in range(small):
        size = min(base + (1 if j < extra else 0), users)
        offset = (j * 7919) % users
        out.append((f"Team {j:05d}", [(offset + k * STRIDE) % users for k in range(size)]))
    return out, departments


def write(snapshot_users, snapshot_groups, idp, out):
    """Writes the snapshot without building one huge string."""
    w = out.write
    w('{"idp": %s, "complete": true,\n "users": [\n' % json.dumps(idp))
    for n, u in enumerate(snapshot_users):
        w(("  " if n == 0 else ",\n  ") + json.dumps(u, separators=(",", ":")))
    w('\n ],\n "groups": [\n')
    for n, (g, name, members) in enumerate(snapshot_groups):
        w(("  " if n == 0 else ",\n  ")
          + '{"external_id":"%s","display_name":%s,"members":[%s]}'
          % (group_id(g), json.dumps(name), ",".join('"%s"' % user_id(m) for m in members)))
    w("\n ]}\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["scale", "roster"])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--groups", type=int, default=10_000)
    p.add_argument("--memberships", type=int, default=1_000_000)
    p.add_argument("--change-pct", type=float, default=0.0)
    p.add_argument("--pool", type=int, default=0)
    p.add_argument("--empty", type=int, default=3)
    p.add_argument("--idp", default="bench")
    a = p.parse_args()

    if a.mode == "roster":
        users = [user(i) for i in range(a.users)] + [user(a.users + i, prefix="pool") for i in range(a.pool)]
        groups = [(0, "bench big group", list(range(a.users)))]
        groups += [(1 + e, f"bench empty group {e}", []) for e in range(a.empty)]
        write(users, groups, a.idp, sys.stdout)
        return

    groups, departments = scale_groups(a.users, a.groups, a.memberships)
    every = int(round(100 / a.change_pct)) if a.change_pct > 0 else 0
    users = [user(i, renamed=bool(every) and i % every == 0) for i in range(a.users)]
    out = []
    moved = int(a.memberships * a.change_pct / 100) // 2 if every else 0
    per_group = 5
    for g, (name, members) in enumerate(groups):
        small = g - departments
        if every and small >= 0:
            if small % every == 0:
                name += " (renamed)"
            if small < moved // per_group and len(members) + per_group <= a.users:
                offset = members[0]
                size = len(members)
                members = members[per_group:] + [
                    (offset + k * STRIDE) % a.users for k in range(size, size + per_group)]
        out.append((g, name, members))
    write(users, out, a.idp, sys.stdout)


if __name__ == "__main__":
    main()
