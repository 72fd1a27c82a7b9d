#!/usr/bin/env python3
"""Output bytes and DSSIM of one peer in one scenario, over the whole corpus (stdlib only).

    python3 quality.py JOBS OUT_DIR REF_DIR WIDTH MANIFEST CORPUS_DIR

JOBS: lines "corpus_file<TAB>source", source an http:// URL (fetched once with GET) or
"cmd:" and a shell command that writes "{out}" (vipsthumbnail). Each output is kept in
OUT_DIR, decoded to PNG (ImageMagick for JPEG, dwebp for WebP, avifdec for AVIF) and compared
with `dssim` against a reference: the original resized by ImageMagick to the output's exact
size (`-filter Lanczos -resize WxH!`), flattened on white unless the output keeps
transparency. References are cached in REF_DIR (same file, size and mode: same reference).
Prints one JSON object: n, failed, mean bytes, mean DSSIM over opaque originals ("photos")
and over originals with alpha, and the outputs whose width is not WIDTH.

Environment: DSSIM (the dssim binary), CONVERT (ImageMagick's convert), MAGICK_CONFIGURE_PATH
(a policy that allows 18 MP images).
"""
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request

DSSIM = os.environ.get("DSSIM", "dssim")
CONVERT = os.environ.get("CONVERT", "/usr/bin/convert")
IDENTIFY = os.path.join(os.path.dirname(CONVERT), "identify")


def sniff(data):
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        return "avif"
    return "bin"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


def decode(path, fmt, png):
    if fmt == "webp":
        sh(["dwebp", "-quiet", path, "-o", png])
    elif fmt == "avif":
        sh(["avifdec", path, png])
    else:
        sh([CONVERT, path, png])


def main():
    jobs_file, out_dir, ref_dir, width, manifest, corpus = sys.argv[1:7]
    width = int(width)
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(ref_dir, exist_ok=True)
    with open(manifest) as f:
        head, *rows = [line.split("\t") for line in f.read().splitlines()]
    alpha = {r[0]: r[head.index("alpha")] == "yes" for r in rows}
    sizes, d_photo, d_alpha, wrong, failed = [], [], [], [], []
    with open(jobs_file) as f:
        jobs = [line.split("\t", 1) for line in f.read().splitlines() if line]
    for file, source in jobs:
        stem = os.path.splitext(file)[0]
        try:
            if source.startswith("cmd:"):
                # "{out}.EXT[options]" in the command: the output is OUT_DIR/stem.EXT
                ext = re.search(r"\{out\}(\.\w+)", source).group(1)
                tmp = os.path.join(out_dir, stem + ".cli")
                sh(shlex.split(source[4:].replace("{out}", tmp)))
                with open(tmp + ext, "rb") as f:
                    data = f.read()
                os.remove(tmp + ext)
            else:
                with urllib.request.urlopen(source, timeout=300) as r:
                    data = r.read()
        except Exception as e:  # noqa: BLE001 - report and go on
            failed.append(f"{file}: {e}")
            continue
        fmt = sniff(data)
        out = os.path.join(out_dir, f"{stem}.{fmt}")
        with open(out, "wb") as f:
            f.write(data)
        png = os.path.join(out_dir, f"{stem}.decoded.png")
        try:
            decode(out, fmt, png)
            w, h, opaque = sh([IDENTIFY, "-format", "%w %h %[opaque]", png]).stdout.decode().split()
        except subprocess.CalledProcessError as e:
            failed.append(f"{file}: cannot decode {fmt}: {e.stderr.decode(errors='replace')[:200]}")
            continue
        sizes.append(len(data))
        if int(w) != width:
            wrong.append(f"{file}: {w}x{h}")
        keep_alpha = opaque.lower() == "false"  # IM6 prints "false"/"true"
        ref = os.path.join(ref_dir, f"{stem}.{w}x{h}.{'rgba' if keep_alpha else 'white'}.png")
        if not os.path.exists(ref):
            cmd = [CONVERT, os.path.join(corpus, file), "-filter", "Lanczos", "-resize", f"{w}x{h}!"]
            cmd += ["PNG32:" + ref + ".tmp"] if keep_alpha else ["-background", "white", "-flatten", "PNG24:" + ref + ".tmp"]
            sh(cmd)
            os.replace(ref + ".tmp", ref)
        try:
            score = float(sh([DSSIM, ref, png]).stdout.split()[0])
        except (subprocess.CalledProcessError, ValueError, IndexError) as e:
            failed.append(f"{file}: dssim: {e}")
            continue
        (d_alpha if alpha.get(file) else d_photo).append(score)
        os.remove(png)

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    print(json.dumps({
        "n": len(sizes), "failed": failed, "bytes": mean(sizes),
        "dssim_photo": mean(d_photo), "n_photo": len(d_photo),
        "dssim_alpha": mean(d_alpha), "n_alpha": len(d_alpha),
        "wrong_width": wrong,
    }))


if __name__ == "__main__":
    main()
