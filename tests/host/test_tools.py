"""tools/build_mpy.py, deploy.py and flash.py, against a virtual board and
dry runs: no hardware needed."""

import subprocess
import sys

import pytest

import build_mpy
import deploy as deploy_mod
from support.harness import REPO
from vboard import VirtualBoard

PY = sys.executable


def tool(*args, check=True):
    res = subprocess.run([PY] + [str(a) for a in args], capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.mark.parametrize("board, march", [("esp32", "xtensawin"), ("rp2040", "armv6m")])
def test_build_mpy_layout(tmp_path, board, march):
    out = tmp_path / board
    res = tool(REPO / "tools" / "build_mpy.py", board, "--out", out)
    assert "-march=" + march in res.stdout and "total:" in res.stdout
    assert (out / "boot.py").read_text() == (REPO / "firmware" / "boot.py").read_text()
    assert (out / "main.py").exists() and (out / "settings.json").exists()
    sources = sorted((REPO / "firmware" / "lib" / "umqtt_full").rglob("*.py"))
    for src in sources:
        rel = src.relative_to(REPO / "firmware" / "lib").with_suffix(".mpy")
        mpy = out / "lib" / rel
        assert mpy.exists() and mpy.read_bytes()[:1] == b"M", mpy  # .mpy magic
        assert str(rel) in res.stdout
    # Only boot.py and main.py stay source (and the user's secrets.py, if any).
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.py"))
    assert left in (["boot.py", "main.py"], ["boot.py", "main.py", "secrets.py"]), left
    assert ("secrets.py" in left) == (REPO / "boards" / "secrets.py").exists()
    with open(out / "lib" / "umqtt_full" / "topic.mpy", "rb") as f:
        head = f.read(4)
    # .mpy header: byte 2 holds the native architecture in its top bits.
    assert head[2] >> 2 == {"xtensawin": 10, "armv6m": 4}[march], head


def test_build_mpy_without_modules(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build_mpy, "PACKAGE", tmp_path / "empty")
    out = build_mpy.build("esp32", tmp_path / "out")
    assert "nothing to compile" in capsys.readouterr().out
    assert (out / "main.py").exists() and not (out / "lib").exists()


def test_flash_dry_run_prints_exact_commands():
    res = tool(REPO / "tools" / "flash.py", "esp32", "--port", "/dev/ttyUSB9",
               "--firmware", "fw.bin", "--dry-run")
    lines = [l for l in res.stdout.splitlines() if l.startswith("$ ")]
    assert lines[0].endswith("esptool --chip esp32 --port /dev/ttyUSB9 --baud 460800 erase-flash")
    assert lines[1].endswith("--baud 460800 write-flash -z 0x1000 fw.bin")
    res = tool(REPO / "tools" / "flash.py", "rp2040", "--firmware", "fw.uf2", "--mount", "/mnt/x",
               "--dry-run")
    assert "$ cp fw.uf2 /mnt/x/ && sync" in res.stdout


def test_make_flash_dry_run_and_missing_arguments():
    # The Makefile wiring users type, not only the tool behind it.
    res = subprocess.run(["make", "-s", "flash", "BOARD=esp32", "DEVICE=/dev/ttyUSB7",
                          "FIRMWARE=ESP32_GENERIC.bin", "DRY_RUN=1"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "--port /dev/ttyUSB7 --baud 460800 write-flash -z 0x1000 ESP32_GENERIC.bin" in res.stdout
    res = subprocess.run(["make", "-s", "flash", "BOARD=esp32"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode != 0 and "flash: set FIRMWARE=" in res.stderr, res.stderr
    res = subprocess.run(["make", "-s", "device-test", "DEVICE=/dev/ttyUSB7"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "device-test: set BOARD=" in res.stderr, res.stderr


def test_flash_errors_are_clear(tmp_path):
    res = tool(REPO / "tools" / "flash.py", "esp32", "--port", "/dev/nope", "--firmware",
               tmp_path / "missing.bin", check=False)
    assert res.returncode == 1 and "firmware file %s not found" % (tmp_path / "missing.bin") in res.stderr
    assert "serial port" not in res.stderr  # the firmware is checked first
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"\0")
    res = tool(REPO / "tools" / "flash.py", "esp32", "--port", "/dev/nope", "--firmware", fw,
               check=False)
    assert res.returncode == 1 and "serial port /dev/nope not found" in res.stderr


def test_deploy_copies_only_what_changed(tmp_path):
    import time
    started = time.time() - 1
    with VirtualBoard() as vb:
        deploy = REPO / "tools" / "deploy.py"
        first = tool(deploy, "unix", vb.device, "--reset", "soft")
        assert "0 unchanged" in first.stdout
        assert (vb.fs_root / "lib" / "umqtt_full" / "__init__.mpy").exists()
        assert (vb.fs_root / "settings.json").exists() and (vb.fs_root / "boot.py").exists()

        again = tool(deploy, "unix", vb.device, "--reset", "none")
        assert " 0 copied" in again.stdout, again.stdout

        # Edited on the board, and a leftover module that would shadow ours.
        (vb.fs_root / "main.py").write_text("# changed by hand\n")
        (vb.fs_root / "lib" / "umqtt_full" / "stale.py").write_text("X = 1\n")
        third = tool(deploy, "unix", vb.device, "--reset", "none")
        assert "copied  main.py" in third.stdout and "removed lib/umqtt_full/stale.py" in third.stdout
        assert (vb.fs_root / "main.py").read_text() == (REPO / "firmware" / "main.py").read_text()
        assert not (vb.fs_root / "lib" / "umqtt_full" / "stale.py").exists()
        manifest = deploy_mod.manifest_path(REPO / "build" / "unix", vb.device)
        assert manifest.stat().st_mtime >= started and str(vb.device.strip("/").replace("/", "_")) \
            in manifest.name


def test_deploy_then_reset_starts_the_broker(tmp_path, paho_client):
    # What a user sees after `make deploy`: the board resets, boot.py and
    # main.py run, and the broker from settings.json answers MQTT clients.
    from support.harness import free_port, wait_port
    port = free_port()
    with VirtualBoard(heap="128wK") as vb:
        deploy = REPO / "tools" / "deploy.py"
        tool(deploy, "unix", vb.device, "--reset", "none")
        import json
        s = json.loads((vb.fs_root / "settings.json").read_text())
        assert s["roles"] == ["broker"]
        s["broker_port"] = port  # the board file's 1883 may be taken on this host
        (vb.fs_root / "settings.json").write_text(json.dumps(s))
        res = subprocess.run([str(REPO / ".venv" / "bin" / "mpremote"), "connect", vb.device,
                              "reset"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        wait_port("127.0.0.1", port, timeout=20)
        sub = paho_client("127.0.0.1", port, protocol=5, client_id="after-deploy")
        sub.subscribe("up/#", qos=1)
        pub = paho_client("127.0.0.1", port, protocol=4, client_id="pub")
        pub.publish("up/yes", b"1", qos=1)
        assert [m.payload for m in sub.wait_for(1, timeout=5)] == [b"1"]
        assert "main: broker on port %d" % port in vb.console_text()


def test_make_run_serves_on_the_given_port(paho_client):
    # The README's first command, as typed.
    import os
    import signal
    from support.harness import free_port, wait_port
    port = free_port()
    p = subprocess.Popen(["make", "-s", "run", "PORT=%d" % port], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port("127.0.0.1", port, timeout=60, proc=p)
        sub = paho_client("127.0.0.1", port, protocol=4, client_id="s")
        sub.subscribe("run/#", qos=1)
        pub = paho_client("127.0.0.1", port, protocol=5, client_id="p")
        pub.publish("run/x", b"up", qos=1)
        assert [m.payload for m in sub.wait_for(1, timeout=5)] == [b"up"]
    finally:
        os.killpg(p.pid, signal.SIGINT)
        try:
            out = p.communicate(timeout=10)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out = p.communicate()[0].decode(errors="replace")
    assert "listening on 127.0.0.1:%d" % port in out, out
