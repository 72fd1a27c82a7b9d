#!/usr/bin/env python3
"""Builds the comparison corpus from Debian's wallpaper packages (stdlib only).

    python3 corpus.py OUT_DIR

Downloads the packages with `apt-get download` (no install), extracts them with `dpkg-deb -x`
under OUT_DIR/debs, and writes OUT_DIR/files/ (the images, flat names) and
OUT_DIR/manifest.tsv (one line per image). A second run with a complete manifest does nothing. Needs jpegtran, cwebp and
ImageMagick's convert (with a policy allowing 4 MP, MAGICK_CONFIGURE_PATH).

JPEGs are re-coded losslessly with jpegtran: every other one (by size) progressive, the rest
baseline, so both kinds cover small and large images. Two WebPs are made from photos with cwebp
(q 85); the third is shipped as WebP by gnome-backgrounds. The PNGs have real transparency
(see PNGS).
"""
import os
import shutil
import struct
import subprocess
import sys

PACKAGES = ["mate-backgrounds", "plasma-workspace-wallpapers", "ukui-wallpapers", "gnome-backgrounds",
            "desktop-base"]

# (name, path under usr/share, kind). Photos are photographs; art/render are wallpapers drawn or
# rendered, kept for the 6-18 MP range (the packages have no photograph that large).
JPEGS = [
    ("greenmeadow", "backgrounds/mate/nature/GreenMeadow.jpg", "photo"),
    ("dune", "backgrounds/mate/nature/Dune.jpg", "photo"),
    ("blinds", "backgrounds/mate/nature/Blinds.jpg", "photo"),
    ("raindrops", "backgrounds/mate/nature/RainDrops.jpg", "photo"),
    ("storm", "backgrounds/mate/nature/Storm.jpg", "photo"),
    ("yellowflower", "backgrounds/mate/nature/YellowFlower.jpg", "photo"),
    ("ladybird", "backgrounds/mate/nature/LadyBird.jpg", "photo"),
    ("twowings", "backgrounds/mate/nature/TwoWings.jpg", "photo"),
    ("wood", "backgrounds/mate/nature/Wood.jpg", "photo"),
    ("grey", "wallpapers/Grey/contents/images/2560x1600.jpg", "photo (grayscale)"),
    ("summer1am", "wallpapers/summer_1am/contents/images/2560x1600.jpg", "photo"),
    ("cups", "wallpapers/ColorfulCups/contents/images/2560x1600.jpg", "photo"),
    ("fallenleaf", "wallpapers/FallenLeaf/contents/images/2560x1600.jpg", "photo"),
    ("eveningglow", "wallpapers/EveningGlow/contents/images/2560x1600.jpg", "photo"),
    ("path", "wallpapers/Path/contents/images/2560x1600.jpg", "photo"),
    ("pastelhills", "wallpapers/PastelHills/contents/images/3200x2000.jpg", "render"),
    ("string", "backgrounds/string.jpg", "art"),
    ("elephants8", "backgrounds/mate/abstract/Elephants_3840x2160.jpg", "art"),
    ("volna", "wallpapers/Volna/contents/images/5120x2880.jpg", "render"),
    ("honeywave", "wallpapers/Honeywave/contents/images/5120x2880.jpg", "render"),
    ("elephants18", "backgrounds/mate/abstract/Elephants_5640x3172.jpg", "art"),
]
# (name, path, kind, vignette): the packages' transparent PNGs are mostly white shapes made to
# lie on a coloured desktop (blank once flattened on white), so two are photos given a soft oval
# of transparency by ImageMagick (-vignette); the third is a semi-transparent logo as shipped.
PNGS = [
    ("emerald", "plymouth/themes/emerald/logo+emerald.png", "art, alpha", False),
    ("garden", "backgrounds/mate/nature/Garden.jpg", "photo, alpha (vignette)", True),
    ("moss", "wallpapers/OneStandsOut/contents/images/2560x1600.jpg", "photo, alpha (vignette)", True),
]
WEBPS = [  # (name, source, kind, cwebp quality or None for a file shipped as WebP)
    ("aqua", "backgrounds/mate/nature/Aqua.jpg", "photo", 85),
    ("bythewater", "wallpapers/BytheWater/contents/images/2560x1600.jpg", "photo", 85),
    ("adwaita", "backgrounds/gnome/adwaita-l.webp", "render", None),
]


def run(*cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def jpeg_info(data):
    """(width, height, progressive) from the first SOF marker."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h, marker in (0xC2, 0xC6, 0xCA, 0xCE)
        i += 2 + length
    raise ValueError("no SOF marker")


def png_info(data):
    w, h, _depth, color_type = struct.unpack(">IIBB", data[16:26])
    return w, h, color_type in (4, 6)


def webp_info(data):
    chunk = data[12:16]
    if chunk == b"VP8X":
        flags = data[20]
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h, bool(flags & 0x10)
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF, False
    if chunk == b"VP8L":
        b = int.from_bytes(data[21:25], "little")
        return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF), bool((b >> 28) & 1)
    raise ValueError("unknown WebP chunk")


def main():
    out = os.path.abspath(sys.argv[1])
    manifest = os.path.join(out, "manifest.tsv")
    files = os.path.join(out, "files")
    if os.path.exists(manifest):
        with open(manifest) as f:
            rows = [line.split("\t") for line in f.read().splitlines()[1:]]
        wanted = {f"{n}.jpg" for n, *_ in JPEGS} | {f"{n}.png" for n, *_ in PNGS} | {f"{n}.webp" for n, *_ in WEBPS}
        if {r[0] for r in rows} == wanted and all(os.path.exists(os.path.join(files, r[0])) for r in rows):
            print(f"corpus: reusing {len(rows)} images in {files}", file=sys.stderr)
            return
    debs = os.path.join(out, "debs")
    os.makedirs(debs, exist_ok=True)
    root = os.path.join(debs, "x")
    for pkg in PACKAGES:
        if not any(n.startswith(pkg + "_") and n.endswith(".deb") for n in os.listdir(debs)):
            run("apt-get", "download", "-q", pkg, cwd=debs)
        deb = next(n for n in sorted(os.listdir(debs)) if n.startswith(pkg + "_") and n.endswith(".deb"))
        run("dpkg-deb", "-x", os.path.join(debs, deb), root)
    share = os.path.join(root, "usr", "share")

    shutil.rmtree(files, ignore_errors=True)
    os.makedirs(files)
    rows = []
    # JPEG: order by pixel count, alternate progressive/baseline.
    jpegs = []
    for name, rel, kind in JPEGS:
        src = os.path.join(share, rel)
        with open(src, "rb") as f:
            w, h, _ = jpeg_info(f.read())
        jpegs.append((w * h, name, src, kind, rel))
    jpegs.sort()
    for i, (_px, name, src, kind, rel) in enumerate(jpegs):
        dst = os.path.join(files, f"{name}.jpg")
        args = ["jpegtran", "-copy", "all"] + (["-progressive"] if i % 2 == 0 else []) + ["-outfile", dst, src]
        run(*args)
        rows.append((f"{name}.jpg", kind, rel))
    for name, rel, kind, vignette in PNGS:
        dst = os.path.join(files, f"{name}.png")
        if vignette:
            run("convert", os.path.join(share, rel), "-alpha", "set", "-background", "none",
                "-vignette", "0x60+60+60", "PNG32:" + dst)
            rel += " (convert -alpha set -background none -vignette 0x60+60+60)"
        else:
            shutil.copyfile(os.path.join(share, rel), dst)
        rows.append((f"{name}.png", kind, rel))
    for name, rel, kind, q in WEBPS:
        dst = os.path.join(files, f"{name}.webp")
        if q is None:
            shutil.copyfile(os.path.join(share, rel), dst)
            rows.append((f"{name}.webp", kind, rel))
        else:
            run("cwebp", "-quiet", "-q", str(q), "-metadata", "icc", os.path.join(share, rel), "-o", dst)
            rows.append((f"{name}.webp", kind, f"{rel} (cwebp -q {q})"))

    lines = ["file\tformat\twidth\theight\tmp\tprogressive\talpha\tbytes\tkind\tsource"]
    for file, kind, rel in rows:
        path = os.path.join(files, file)
        with open(path, "rb") as f:
            data = f.read()
        if file.endswith(".jpg"):
            w, h, prog = jpeg_info(data)
            fmt, alpha = "jpeg", False
        elif file.endswith(".png"):
            (w, h, alpha), fmt, prog = png_info(data), "png", False
        else:
            (w, h, alpha), fmt, prog = webp_info(data), "webp", False
        lines.append(f"{file}\t{fmt}\t{w}\t{h}\t{w * h / 1e6:.1f}\t{'yes' if prog else 'no'}\t"
                     f"{'yes' if alpha else 'no'}\t{len(data)}\t{kind}\t{rel}")
    os.chmod(out, 0o755)
    with open(manifest + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(manifest + ".tmp", manifest)
    shutil.rmtree(root, ignore_errors=True)  # the .debs stay, for a rebuild without downloads
    print(f"corpus: {len(rows)} images in {files}", file=sys.stderr)


if __name__ == "__main__":
    main()
