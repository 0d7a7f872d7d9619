#!/usr/bin/env python3
"""Build the firmware for BOARD and copy what changed to the board on DEVICE
with mpremote, then reset it.

    deploy.py esp32 /dev/ttyUSB0
    deploy.py unix /dev/pts/5        # a virtual board (tools/vboard.py)

What changed is decided against the board itself: one mpremote exec hashes
the files it has (sha256), so a board that was wiped or edited by hand is
still brought in line. Files under lib/umqtt_full that the build no longer
has are removed (a stale .py would shadow the new .mpy). A manifest of what
was deployed is kept in build/<board>/.deployed-<device>.json; it stands in
for the board's answer when the board cannot hash.
"""

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_mpy import REPO, build  # noqa: E402

MPREMOTE = REPO / ".venv" / "bin" / "mpremote"
OWNED_DIR = "lib/umqtt_full"  # everything in here on the board is ours

# Runs on the board: small, and hashes in chunks so big files fit the heap.
_REMOTE_HASH = r"""
import os, json
try:
    import hashlib, binascii
except ImportError:
    hashlib = None
def _h(p):
    if hashlib is None:
        return "?"
    try:
        f = open(p, "rb")
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(b if n == 512 else b[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
def _ls(d):
    try:
        return [d + "/" + e[0] for e in os.ilistdir(d) if e[1] == 0x8000]
    except OSError:
        return []
for d in DIRS:
    try:
        os.mkdir(d)
    except OSError:
        pass
print(json.dumps({"hashes": {p: _h(p) for p in PATHS}, "owned": _ls(OWNED)}))
"""


def mpremote(device, *args, timeout=120):
    cmd = [str(MPREMOTE), "connect", device, "resume"] + list(args)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise SystemExit("deploy: mpremote failed (%d): %s\n%s%s" % (
            res.returncode, " ".join(cmd[:6]), res.stdout, res.stderr))
    return res.stdout


def local_files(root):
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith("."):
            files[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def manifest_path(out, device):
    return out / (".deployed-%s.json" % re.sub(r"[^A-Za-z0-9_.-]+", "_", device.strip("/")))


def deploy(board, device, reset="hard", force=False, out=None):
    out = build(board, out)
    files = local_files(out)
    dirs = set()
    for f in files:
        parts = f.split("/")[:-1]
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    dirs = sorted(dirs, key=lambda d: (d.count("/"), d))  # parents first: mkdir is not recursive
    code = "DIRS = %r\nPATHS = %r\nOWNED = %r\n" % (dirs, list(files), OWNED_DIR) + _REMOTE_HASH
    answer = mpremote(device, "exec", code).strip().splitlines()[-1]
    remote = json.loads(answer)
    hashes = remote["hashes"]
    mpath = manifest_path(out, device)
    if any(v == "?" for v in hashes.values()):
        # No hashlib on this firmware: trust what we deployed last time.
        previous = json.loads(mpath.read_text()) if mpath.exists() else {}
        hashes = {p: previous.get(p) for p in files}

    changed = [f for f, h in files.items() if force or hashes.get(f) != h]
    stale = sorted(set(remote["owned"]) - set(files))
    args = []
    for f in changed:
        args += ["fs", "cp", "-f", str(out / f), ":" + f, "+"]
    for f in stale:
        args += ["fs", "rm", ":" + f, "+"]
    if args:
        mpremote(device, *args[:-1], timeout=600)
    mpath.write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")
    for f in changed:
        print("  copied  %s" % f)
    for f in stale:
        print("  removed %s" % f)
    print("deploy: %s -> %s: %d copied, %d unchanged, %d removed" % (
        board, device, len(changed), len(files) - len(changed), len(stale)))

    if reset == "soft":
        mpremote(device, "soft-reset")
    elif reset == "hard":
        mpremote(device, "reset")
    return changed, stale


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("board", help="esp32, rp2040 or unix")
    ap.add_argument("device", help="serial port, e.g. /dev/ttyUSB0, /dev/ttyACM0, /dev/pts/N")
    ap.add_argument("--reset", choices=("soft", "hard", "none"), default="hard",
                    help="after copying: hard runs boot.py and main.py as at power-on; "
                         "soft (mpremote's, from the raw REPL) does not run main.py "
                         "(default %(default)s)")
    ap.add_argument("--force", action="store_true", help="copy every file")
    args = ap.parse_args()
    if not MPREMOTE.exists():
        raise SystemExit("deploy: %s missing: run `make setup`" % MPREMOTE)
    if not Path(args.device).exists() and not args.device.startswith(("rfc2217:", "socket:")):
        raise SystemExit("deploy: no such device %s (plugged in? try `mpremote devs`)" % args.device)
    deploy(args.board, args.device, args.reset, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
