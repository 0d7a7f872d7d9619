#!/usr/bin/env python3
"""Put MicroPython firmware on a board.

    flash.py esp32 --port /dev/ttyUSB0 --firmware ESP32_GENERIC-....bin
    flash.py rp2040 --firmware RPI_PICO_W-....uf2 [--mount /media/me/RPI-RP2]
    flash.py ... --dry-run            # print the exact commands, touch nothing

ESP32: esptool 5 erase-flash, then write-flash -z at the offset from
boards/esp32/board.json. RP2040: copy the .uf2 onto the RPI-RP2 drive the
bootloader mounts (hold BOOTSEL while plugging in; with --port, a running
MicroPython is asked to enter the bootloader first).
"""

import argparse
import getpass
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"


def fail(msg):
    print("flash: " + msg, file=sys.stderr)
    raise SystemExit(1)


def board_config(board):
    path = REPO / "boards" / board / "board.json"
    if not path.exists():
        fail("unknown board %r (see boards/*/board.json)" % board)
    return json.loads(path.read_text())


def run(cmd, dry_run):
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    if not dry_run:
        res = subprocess.run([str(c) for c in cmd])
        if res.returncode != 0:
            fail("command failed with exit status %d" % res.returncode)


def check_firmware(path, suffix, dry_run):
    if not path.name.endswith(suffix):
        print("flash: warning: %s does not end in %s" % (path, suffix), file=sys.stderr)
    if not path.is_file():
        if dry_run:
            print("flash: note: %s does not exist (dry run goes on)" % path, file=sys.stderr)
        else:
            fail("firmware file %s not found (download it from micropython.org/download)" % path)


def flash_esp32(cfg, port, firmware, baud, dry_run):
    check_firmware(firmware, ".bin", dry_run)
    if not port:
        fail("esp32 needs --port (DEVICE=), e.g. /dev/ttyUSB0")
    if not dry_run and not os.path.exists(port):
        fail("serial port %s not found (plugged in? `ls /dev/ttyUSB* /dev/ttyACM*`)" % port)
    fl = cfg["flash"]
    base = [BIN / "esptool", "--chip", cfg["chip"], "--port", port, "--baud", str(baud or fl["baud"])]
    run(base + ["erase-flash"], dry_run)
    run(base + ["write-flash", "-z", fl["offset"], firmware], dry_run)


def find_rp2_mount(volume):
    pats = ["/media/*/%s", "/run/media/*/%s", "/media/%s", "/mnt/%s", "/Volumes/%s"]
    hits = [p for pat in pats for p in glob.glob(pat % volume)]
    return next((p for p in hits if os.path.isfile(os.path.join(p, "INFO_UF2.TXT"))), None)


def flash_rp2040(cfg, port, firmware, mount, dry_run):
    check_firmware(firmware, ".uf2", dry_run)
    volume = cfg["flash"].get("volume", "RPI-RP2")
    mount = mount or find_rp2_mount(volume)
    if not mount and port:
        # A board running MicroPython can drop into its UF2 bootloader itself.
        run([BIN / "mpremote", "connect", port, "bootloader"], dry_run)
        if dry_run:
            mount = "/media/%s/%s" % (getpass.getuser(), volume)
        else:
            deadline = time.monotonic() + 20
            while not mount and time.monotonic() < deadline:
                time.sleep(0.5)
                mount = find_rp2_mount(volume)
    if not mount:
        if dry_run:
            mount = "/media/%s/%s" % (getpass.getuser(), volume)
            print("flash: note: no %s drive mounted now (dry run goes on)" % volume, file=sys.stderr)
        else:
            fail("no %s drive found: hold BOOTSEL while plugging the board in, or pass "
                 "--mount (MOUNT=) with its mount point" % volume)
    elif not dry_run and not os.path.isdir(mount):
        fail("mount point %s does not exist" % mount)
    print("$ cp %s %s/ && sync" % (shlex.quote(str(firmware)), shlex.quote(str(mount))), flush=True)
    if not dry_run:
        shutil.copyfile(firmware, os.path.join(mount, firmware.name))
        os.sync()  # the board reboots as soon as the last block lands
        print("flash: copied; the board reboots into MicroPython")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("board", choices=("esp32", "rp2040"))
    ap.add_argument("--firmware", required=True, type=Path, help=".bin (esp32) or .uf2 (rp2040)")
    ap.add_argument("--port", help="serial port (DEVICE=)")
    ap.add_argument("--mount", help="rp2040: where the RPI-RP2 drive is mounted (MOUNT=)")
    ap.add_argument("--baud", type=int, help="esp32: override the board.json baud rate")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args()
    cfg = board_config(args.board)
    if args.board == "esp32":
        flash_esp32(cfg, args.port, args.firmware, args.baud, args.dry_run)
    else:
        flash_rp2040(cfg, args.port, args.firmware, args.mount, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
