#!/usr/bin/env python3
"""Turns the raw lines of scripts/bench.sh (results.jsonl) into medians, ratios and verdicts:
writes summary.json and summary.csv beside it and prints the Markdown for BENCHMARKS.md.

Servers: "scimsync" (SQLite), "scimsync-pg1" and "scimsync-pgN" (PostgreSQL, 1 and N
replicas on one database), "baseline", "peer". With PostgreSQL rows present, the SQLite
row is labelled "scimsync (SQLite)" and every scimsync row gets its ratio to the baseline.

Usage: report.py RESULTS_DIR
"""
import csv
import json
import statistics
import sys
from pathlib import Path

SERVERS = ["scimsync", "baseline", "peer"]  # the PostgreSQL rows are inserted after scimsync


def pg_replicas(server):
    return int(server[len("scimsync-pg"):])


def server_label(server, with_pg):
    if server == "scimsync" and with_pg:
        return "scimsync (SQLite)"
    if server.startswith("scimsync-pg"):
        n = pg_replicas(server)
        return f"scimsync (PostgreSQL, {n} replica{'s' if n > 1 else ''})"
    return server


def short(server):
    if server == "scimsync":
        return "SQLite"
    n = pg_replicas(server)
    return f"PostgreSQL {n} replica{'s' if n > 1 else ''}"
WORKLOADS = [
    ("get_id", "GET /Users/{id} (10,000 users)"),
    ("filter", 'GET /Users?filter=userName eq "…" (10,000 users)'),
    ("post", "POST /Users (unique userNames, each committed)"),
    ("patch_empty", "PATCH /Groups/{id}: add one member to an empty group"),
    ("patch_big", "PATCH /Groups/{id}: add one member to a group of 100,000"),
    ("page", "GET /Users?startIndex=50001&count=100 (100,000 users), 32 connections"),
    ("page_c1", "GET /Users?startIndex=50001&count=100 (100,000 users), 1 connection"),
]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    return f"{v:,.0f}"


def rx(v):
    """A ratio, with enough digits to tell small ones apart (0.004×, not 0.00×)."""
    return f"{v:.2f}×" if v >= 0.095 else f"{float(f'{v:.2g}')}×"


def ms(us):
    return "–" if us is None else f"{us / 1000:.2f} ms"


def main():
    d = Path(sys.argv[1])
    lines = [json.loads(l) for l in (d / "results.jsonl").read_text().splitlines() if l.strip()]
    machine = json.loads((d / "machine.json").read_text()) if (d / "machine.json").exists() else {}
    http = {}
    for l in lines:
        if l["kind"] == "http":
            http.setdefault((l["workload"], l["server"]), []).append(l)
    pg = sorted({s for _, s in http if s.startswith("scimsync-pg")}, key=pg_replicas)
    servers = ["scimsync", *pg, "baseline", "peer"]
    ours = ["scimsync", *pg]
    summary = {"machine": machine, "http": {}, "reconcile": {}, "pull": {}, "serve_setup": {}, "rss": [], "targets": [],
               "labels": {s: server_label(s, bool(pg)) for s in servers}}
    rows = []
    for w, _ in WORKLOADS:
        for s in servers:
            runs = http.get((w, s))
            if not runs:
                continue
            errors = sum(sum(r["errors"].values()) for r in runs)
            m = {
                "rounds": len(runs),
                "connections": runs[0].get("connections"),
                "rps": med([r["rps"] for r in runs]),
                "p50_us": med([r["p50_us"] for r in runs]),
                "p99_us": med([r["p99_us"] for r in runs]),
                "requests": sum(r["requests"] for r in runs),
                "errors": errors,
                "first_error": next((r["first_error"] for r in runs if r.get("first_error")), ""),
                "rps_rounds": [round(r["rps"], 1) for r in runs],
            }
            summary["http"].setdefault(w, {})[s] = m
            rows.append({"workload": w, "server": s, **{k: v for k, v in m.items() if k != "rps_rounds"}})

    cli = {}
    for l in lines:
        if l["kind"] == "cli":
            cli.setdefault((l["benchmark"], l["step"]), []).append(l)
    for (bench, step), runs in cli.items():
        m = {"rounds": len(runs), "wall_s": med([r["wall_s"] for r in runs]),
             "max_rss_mb": med([r["max_rss_kb"] / 1024 for r in runs]),
             "max_rss_mb_worst": max(r["max_rss_kb"] / 1024 for r in runs),
             "exit_codes": sorted({r["exit"] for r in runs}),
             "wall_rounds": [round(r["wall_s"], 2) for r in runs]}
        for extra in ("ops", "users", "groups", "memberships", "requests"):
            vals = [r.get(extra) for r in runs if r.get(extra) is not None]
            if vals:
                m[extra] = vals[-1]
        summary[bench][step] = m
        rows.append({"workload": f"{bench}:{step}", "server": "scimsync", "rounds": len(runs),
                     "wall_s": m["wall_s"], "max_rss_mb": m["max_rss_mb"]})
    summary["rss"] = [l for l in lines if l["kind"] == "rss"]
    summary["seed"] = [l for l in lines if l["kind"] == "seed"]

    # Targets (issues 3, 4, 5).
    H = summary["http"]

    def get(w, s, k):
        return H.get(w, {}).get(s, {}).get(k)

    def target(name, value, limit, ok, shown):
        summary["targets"].append({"target": name, "value": value, "limit": limit,
                                   "met": None if value is None else ok, "shown": shown})

    for w, limit in (("get_id", 20000), ("filter", 20000), ("post", 3000)):
        v = get(w, "scimsync", "rps")
        target(f"{w} ≥ {limit:,} req/s", v, limit, v is not None and v >= limit, f"{fmt(v)} req/s")
    e, b = get("patch_empty", "scimsync", "rps"), get("patch_big", "scimsync", "rps")
    ratio = e / b if e and b else None
    target("add a member to a 100,000 group ≤ 2× an empty one", ratio, 2.0,
           ratio is not None and ratio <= 2.0,
           "–" if ratio is None else f"{ratio:.2f}× (per-request cost at 32 connections)")
    p = get("page_c1", "scimsync", "p50_us")
    target("page of 100 out of 100,000 < 5 ms", p, 5000, p is not None and p < 5000,
           f"{ms(p)} median, 1 connection")
    rss = [r for r in summary["rss"] if r["server"] == "scimsync" and r.get("users") == 100000]
    if rss:
        worst = max(r["hwm_kb"] for r in rss) / 1024
        target("resident memory < 100 MB with 100,000 users", worst, 100, worst < 100,
               f"{worst:.1f} MB (peak VmHWM)")
    R = summary["reconcile"]
    for step, limit, label in (("plan_empty", 3, "plan on an empty store < 3 s"),
                               ("apply", 30, "apply < 30 s"),
                               ("plan_noop", 2, "no-op plan < 2 s"),
                               ("plan_1pct", 2, "1% change plan < 2 s")):
        v = R.get(step, {}).get("wall_s")
        target(f"reconcile: {label}", v, limit, v is not None and v < limit,
               "–" if v is None else f"{v:.2f} s")
    if R:
        worst = max(m["max_rss_mb_worst"] for m in R.values())
        target("reconcile: peak memory < 500 MB", worst, 500, worst < 500, f"{worst:.0f} MB")
    P = summary["pull"].get("pull")
    if P:
        target("pull 1,000,000 memberships < 60 s", P["wall_s"], 60, P["wall_s"] < 60,
               f"{P['wall_s']:.2f} s")
        target("pull peak memory < 500 MB", P["max_rss_mb_worst"], 500,
               P["max_rss_mb_worst"] < 500, f"{P['max_rss_mb_worst']:.0f} MB")

    (d / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    with open(d / "summary.csv", "w", newline="") as f:
        keys = sorted({k for r in rows for k in r})
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)

    # Markdown.
    out = []
    if machine:
        out.append(f"Run {machine.get('date', '')}: {machine.get('nproc')} CPUs "
                   f"({machine.get('cpu')}), {machine.get('mem_gb')} GB RAM, kernel "
                   f"{machine.get('kernel')}; load average {machine.get('load_before')} before, "
                   f"{machine.get('load_after', '?')} after; {machine.get('rounds')} rounds × "
                   f"{machine.get('duration')}, {machine.get('connections')} connections, "
                   f"wrk {machine.get('wrk_threads')} threads"
                   + (f"; {machine['postgres']}" if pg and machine.get("postgres") else "") + ".\n")
    for w, title in WORKLOADS:
        if w not in H:
            continue
        out.append(f"**{title}**\n")
        out.append("| server | connections | req/s (median) | p50 | p99 | rounds (req/s) | non-2xx/errors |")
        out.append("|---|---:|---:|---:|---:|---|---:|")
        for s in servers:
            m = H[w].get(s)
            if not m:
                continue
            lat = (f"{ms(m['p50_us'])} | {ms(m['p99_us'])}" if m["requests"]
                   else "none completed | none completed")
            out.append(f"| {server_label(s, bool(pg))} | {m['connections']} | {fmt(m['rps'])} | {lat} | "
                       f"{', '.join(fmt(x) for x in m['rps_rounds'])} | {m['errors']:,} |")
        if not pg:
            sm = H[w].get("scimsync", {}).get("rps")
            ratios = []
            for s in ("baseline", "peer"):
                o = H[w].get(s, {}).get("rps")
                if sm and o:
                    ratios.append(f"scimsync/{s} = **{sm / o:.2f}×**")
                elif sm and s in H[w] and not o:
                    ratios.append(f"scimsync/{s}: not comparable ({s} completed no request within a round)")
            if ratios:
                out.append("\nThroughput ratio: " + ", ".join(ratios) + "\n")
            else:
                out.append("")
        else:
            parts = []
            for other in ("baseline", "peer"):
                if other not in H[w]:
                    continue
                o = H[w][other].get("rps")
                each = []
                for s in ours:
                    sm = H[w].get(s, {}).get("rps")
                    if s not in H[w]:
                        continue
                    if sm is not None and o:
                        each.append(f"{short(s)} **{rx(sm / o)}**")
                    else:
                        each.append(f"{short(s)}: not comparable")
                if each:
                    parts.append(f"scimsync/{other}: " + ", ".join(each))
            out.append(("\nThroughput ratio: " + "; ".join(parts) + "\n") if parts else "")
        for s in servers:
            m = H[w].get(s)
            if m and m["first_error"]:
                out.append(f"First failing answer from {server_label(s, bool(pg))}: `{m['first_error'][:300]}`\n")
    if pg and any(w in H for w, _ in WORKLOADS):
        top = pg[-1]
        out.append("**scimsync on PostgreSQL against SQLite** (medians of the rounds above)\n")
        out.append(f"| workload | SQLite req/s | PG 1 replica req/s | PG {pg_replicas(top)} replicas req/s "
                   f"| PG 1 / SQLite | PG {pg_replicas(top)} / PG 1 | p99 SQLite / PG 1 / PG {pg_replicas(top)} "
                   f"| non-2xx/errors (SQLite / PG 1 / PG {pg_replicas(top)}) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for w, _ in WORKLOADS:
            if w not in H:
                continue
            a, b, c = (H[w].get(s, {}) for s in ("scimsync", pg[0], top))

            def ratio(x, y):
                return rx(x["rps"] / y["rps"]) if x.get("rps") is not None and y.get("rps") else "–"
            out.append(f"| {w} | {fmt(a.get('rps'))} | {fmt(b.get('rps'))} | {fmt(c.get('rps'))} | "
                       f"{ratio(b, a)} | {ratio(c, b)} | "
                       f"{ms(a.get('p99_us'))} / {ms(b.get('p99_us'))} / {ms(c.get('p99_us'))} | "
                       f"{a.get('errors', '–')} / {b.get('errors', '–')} / {c.get('errors', '–')} |")
        out.append("")
    if R:
        out.append("**Reconcile scale** (100,000 users, 10,000 groups, 1,000,000 memberships)\n")
        out.append("| step | wall time (median) | rounds | peak RSS (median / worst) |")
        out.append("|---|---:|---|---:|")
        for step, label in (("plan_empty", "plan on an empty store"), ("apply", "apply on an empty store"),
                            ("plan_noop", "no-op plan"), ("plan_1pct", "1% change plan"),
                            ("apply_1pct", "apply the 1% change")):
            m = R.get(step)
            if m:
                out.append(f"| {label} | {m['wall_s']:.2f} s | {', '.join(f'{x:.2f}' for x in m['wall_rounds'])} | "
                           f"{m['max_rss_mb']:.0f} / {m['max_rss_mb_worst']:.0f} MB |")
        out.append("")
    if P:
        out.append("**Pull from the mock Graph** (1,000,000 memberships, 999 per page)\n")
        out.append("| step | wall time (median) | rounds | peak RSS (median / worst) | requests |")
        out.append("|---|---:|---|---:|---:|")
        out.append(f"| pull | {P['wall_s']:.2f} s | {', '.join(f'{x:.2f}' for x in P['wall_rounds'])} | "
                   f"{P['max_rss_mb']:.0f} / {P['max_rss_mb_worst']:.0f} MB | {fmt(P.get('requests'))} |")
        out.append("")
    seeds = summary["seed"]
    S = summary["serve_setup"]
    if pg and (seeds or S):
        out.append("**Setting up the stores**\n")
        out.append("| server | SCIM seeding (users/s) | retried requests | apply 100,000 users (s) | apply the pool (s) |")
        out.append("|---|---:|---:|---:|---:|")
        for s in servers:
            sd = next((x for x in seeds if x["server"] == s), None)
            suffix = "" if s == "scimsync" else f"_{s}"
            ar, ap = S.get(f"apply_roster{suffix}"), S.get(f"apply_pool{suffix}")
            if sd is None and ar is None:
                continue
            seeded = fmt(sd["users_per_second"]) if sd else "–"
            retries = sd.get("retries", 0) if sd else "–"
            roster = f"{ar['wall_s']:.2f}" if ar else "–"
            pool = f"{ap['wall_s']:.2f}" if ap else "–"
            out.append(f"| {server_label(s, True)} | {seeded} | {retries} | {roster} | {pool} |")
        out.append("")
    if summary["rss"]:
        out.append("**Resident memory of scimsync**\n")
        out.append("| when | users stored | RSS | peak (VmHWM) |")
        out.append("|---|---:|---:|---:|")
        for r in summary["rss"]:
            if r["server"] == "scimsync":
                out.append(f"| {r['when']} | {r['users']:,} | {r['rss_kb'] / 1024:.1f} MB | {r['hwm_kb'] / 1024:.1f} MB |")
        out.append("")
        pg_rss = [r for r in summary["rss"] if r["server"].startswith("scimsync-pg")]
        if pg_rss:
            out.append("**Resident memory of scimsync on PostgreSQL** (each replica, in replica order; "
                       "the database server's own memory is not included)\n")
            out.append("| server | when | users stored | RSS | peak (VmHWM) |")
            out.append("|---|---|---:|---:|---:|")
            groups = {}
            for r in pg_rss:
                groups.setdefault((r["when"], r["server"]), []).append(r)
            for (when, srv), rs in groups.items():
                rs.sort(key=lambda r: r.get("replica", 1))
                rss_mb = " / ".join(f"{r['rss_kb'] / 1024:.1f}" for r in rs)
                hwm_mb = " / ".join(f"{r['hwm_kb'] / 1024:.1f}" for r in rs)
                out.append(f"| {server_label(srv, True)} | {when} | {rs[0]['users']:,} | {rss_mb} MB | {hwm_mb} MB |")
            out.append("")
    out.append("**Targets**\n")
    out.append("| target | measured | verdict |")
    out.append("|---|---:|---|")
    for t in summary["targets"]:
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "**missed**")
        out.append(f"| {t['target']} | {t['shown']} | {verdict} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
