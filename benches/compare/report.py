#!/usr/bin/env python3
"""Markdown report of one comparison run (stdlib only).

    python3 report.py RUN_DIR MANIFEST

Reads RUN_DIR/results.jsonl (written by run.sh), meta.txt and commands.txt.
"""
import json
import os
import sys

PEER_NAMES = {
    "imgnode": "imgnode",
    "thumbor": "thumbor (2 procs + nginx LB)",
    "ipx": "ipx (2 procs + nginx LB)",
    "nginx": "nginx image_filter (JPEG sources)",
    "vips": "vipsthumbnail CLI",
}
HIT_NAMES = {
    "imgnode": "imgnode memory hit",
    "thumbor": "thumbor result storage (2 procs + LB)",
    "nginx": "nginx static (imgnode's bytes)",
}
SCENARIO_NAMES = {
    "jpg400": "cold 400 px JPEG",
    "jpg1200": "cold 1200 px JPEG",
    "webp800": "cold 800 px WebP",
    "avif800": "cold 800 px AVIF",
    "hit": "cache hit, 400 px JPEG",
}


def fmt_num(x, digits=1):
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) < 0.1 and x != 0:
        return f"{x:.3f}"
    if abs(x) < 1:
        return f"{x:.2f}"
    return f"{x:.{digits}f}"


def label(r):
    """The first two cells of a row: scenario and peer, by their display names."""
    names = HIT_NAMES if r["scenario"] == "hit" else PEER_NAMES
    return f"| {SCENARIO_NAMES.get(r['scenario'], r['scenario'])} | {names.get(r['peer'], r['peer'])} |"


def main():
    run_dir, manifest = sys.argv[1:3]
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "results.jsonl")) if line.strip()]
    meta = open(os.path.join(run_dir, "meta.txt")).read().splitlines()
    cmds = open(os.path.join(run_dir, "commands.txt")).read().splitlines()
    out = []
    w = out.append
    w(f"# imgnode side by side: thumbor, ipx, nginx, vipsthumbnail ({meta[0].split(': ', 1)[1]})")
    w("")
    for line in meta[1:]:
        key, _, value = line.partition(": ")
        w(f"- **{key}**: {value}")
    w(f"- **run**: `{cmds[0]}`")
    w("")
    w("## Throughput")
    w("")
    w("Cold scenarios: every request a distinct URL cycling over the corpus (no cache can answer); "
      "hit: one URL, already cached. req/s and latency from wrk (vipsthumbnail: images/s of CONC "
      "parallel CLI processes, latency per process incl. start-up). CPU = utime+stime of the peer's "
      "processes (and children, and its nginx balancer) over the run / answers. Peak RSS = VmHWM "
      "summed over those processes, reset before the run (vipsthumbnail: the largest single process).")
    w("")
    w("| scenario | peer | conc | req/s | p50 ms | p99 ms | CPU ms/img | peak RSS MiB | answers | non-200 / errors |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if r["kind"] != "load":
            continue
        bad = f"{r['non200']} / {r['errors']}" if (r["non200"] or r["errors"]) else "0"
        if r.get("cache"):
            bad += f" (X-Cache: {r['cache']})"
        if not r["requests"]:
            w(f"{label(r)} {r['conc']} "
              f"| 0 | - | - | - | {fmt_num(r['rss_mib'], 0)} | 0 | no answer within {r['seconds']:.0f} s |")
            continue
        w(f"{label(r)} {r['conc']} "
          f"| {fmt_num(r['rps'])} | {fmt_num(r['p50_ms'], 2)} | {fmt_num(r['p99_ms'], 2)} "
          f"| {fmt_num(r['cpu_ms'], 2)} | {fmt_num(r['rss_mib'], 0)} | {r['requests']} | {bad} |")
    w("")
    w("## Output bytes and quality")
    w("")
    w("Each corpus image fetched once per peer and scenario. DSSIM (lower is better; 0 = identical) "
      "against ImageMagick `-filter Lanczos -resize WxH!` of the original to the output's own size, "
      "flattened on white unless the output keeps transparency; photos = opaque sources, alpha = "
      "PNGs with transparency.")
    w("")
    w("| scenario | peer | images | KB/img | DSSIM opaque (n) | DSSIM alpha (n) | notes |")
    w("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        if r["kind"] != "quality":
            continue
        notes = []
        if r.get("image"):
            notes.append(f"object: {r['image']} at 400 px")
        if r.get("wrong_width"):
            notes.append("wrong width: " + ", ".join(r["wrong_width"]))
        if r.get("failed"):
            notes.append(f"{len(r['failed'])} failed: " + "; ".join(r["failed"])[:300])

        def d(key, n):
            return f"{r[key]:.5f} ({r[n]})" if r.get(key) is not None else "-"

        w(f"{label(r)} {r['n']} "
          f"| {fmt_num(r['bytes'] / 1024 if r.get('bytes') else None)} | {d('dssim_photo', 'n_photo')} "
          f"| {d('dssim_alpha', 'n_alpha')} | {'; '.join(notes).replace('|', '/')} |")
    w("")
    w("## Corpus")
    w("")
    head, *lines = [line.split("\t") for line in open(manifest).read().splitlines()]
    w("| " + " | ".join(head) + " |")
    w("|" + "---|" * len(head))
    for line in lines:
        w("| " + " | ".join(line) + " |")
    w("")
    w("## Commands")
    w("")
    w("```")
    seen = set()
    for c in cmds:
        if c not in seen:
            seen.add(c)
            w(c)
    w("```")
    print("\n".join(out))


if __name__ == "__main__":
    main()
