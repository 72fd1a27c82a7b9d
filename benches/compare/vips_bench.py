#!/usr/bin/env python3
"""vipsthumbnail over the corpus, as the CLI anchor of the comparison (stdlib only).

    python3 vips_bench.py CONCURRENCY DURATION_S MAX_IMAGES OUT_DIR CMD_TEMPLATE IN1 [IN2 ...]

CMD_TEMPLATE is the vipsthumbnail command with {in} and {out} (e.g.
"vipsthumbnail {in} -s 400x -o {out}.jpg[Q=80,strip]"); {out} is a file name in OUT_DIR,
one per worker.
CONCURRENCY workers run it one image at a time, cycling over the inputs (worker w starts at
input w), until DURATION_S passed or MAX_IMAGES finished. Each process is reaped with wait4,
so its own CPU time (utime+stime) and peak RSS (ru_maxrss) are exact.
Prints one line: RESULT requests=.. duration_us=.. p50_us=.. p99_us=.. non200=.. errors=0
cpu_ms=.. rss_kib=..
"""
import os
import shlex
import subprocess
import sys
import threading
import time


def main():
    conc, duration, max_images = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    out_dir, template, inputs = sys.argv[4], sys.argv[5], sys.argv[6:]
    lock = threading.Lock()
    state = {"started": 0, "lat": [], "cpu": 0.0, "rss": 0, "failed": 0}
    deadline = time.monotonic() + duration

    def worker(w):
        i = w
        out = os.path.join(out_dir, f"vips-w{w}")
        while time.monotonic() < deadline:
            with lock:
                if state["started"] >= max_images:
                    return
                state["started"] += 1
            cmd = template.replace("{in}", shlex.quote(inputs[i % len(inputs)])).replace("{out}", out)
            i += conc
            t0 = time.monotonic()
            proc = subprocess.Popen(shlex.split(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            err = proc.stderr.read()
            proc.stderr.close()
            dt = time.monotonic() - t0
            with lock:
                state["lat"].append(dt)
                state["cpu"] += ru.ru_utime + ru.ru_stime
                state["rss"] = max(state["rss"], ru.ru_maxrss)
                if proc.returncode != 0:
                    state["failed"] += 1
                    if state["failed"] == 1:
                        print(f"vipsthumbnail failed: {err.decode(errors='replace')[:300]}", file=sys.stderr)

    t0 = time.monotonic()
    workers = [threading.Thread(target=worker, args=(w,)) for w in range(conc)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.monotonic() - t0
    lat = sorted(state["lat"])
    n = len(lat)

    def pct(p):
        return lat[min(n - 1, int(p / 100 * n))] * 1e6 if n else 0

    print(f"RESULT requests={n} duration_us={int(elapsed * 1e6)} p50_us={int(pct(50))} p99_us={int(pct(99))} "
          f"non200={state['failed']} errors=0 cpu_ms={state['cpu'] * 1000:.1f} rss_kib={state['rss']}")


if __name__ == "__main__":
    main()
