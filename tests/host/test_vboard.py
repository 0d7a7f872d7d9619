"""tools/vboard.py: the board emulation tests/device relies on. Each test
drives it the way a person with a real board would: mpremote or a terminal."""

import signal
import subprocess
import sys
import time

import pytest
import serial

from support.harness import MPREMOTE, REPO, free_port, run_mpremote, wait_port
from vboard import VirtualBoard


def mpr(dev, *args, resume=True, timeout=30):
    return run_mpremote(dev, *args, resume=resume, timeout=timeout).stdout


def wait_console(vb, text, timeout=10):
    deadline = time.monotonic() + timeout
    while text not in vb.console_text():
        assert time.monotonic() < deadline, "%r not in console:\n%s" % (text, vb.console_text()[-2000:])
        time.sleep(0.05)


@pytest.fixture
def vb():
    with VirtualBoard() as b:
        yield b


def test_cli_prints_device_and_stops_on_sigterm(tmp_path):
    p = subprocess.Popen([sys.executable, str(REPO / "tools" / "vboard.py"), "--fs", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        dev = p.stdout.readline().strip()
        assert dev.startswith("/dev/pts/")
        assert mpr(dev, "exec", "print('cli', 1 + 1)").strip() == "cli 2"
        mpr(dev, "exec", "open('/made_on_board.txt', 'w').write('x')")
        assert (tmp_path / "made_on_board.txt").read_text() == "x"
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0, p.stderr.read()
    assert (tmp_path / "made_on_board.txt").exists()  # a given --fs is kept


def test_filesystem_root_is_the_board_dir(vb):
    (vb.fs_root / "lib").mkdir()
    (vb.fs_root / "lib" / "vbmod.py").write_text("VALUE = 7\n")
    (vb.fs_root / "settings.json").write_text('{"a": 1}')
    out = mpr(vb.device, "exec",
              "import vbmod, json, os; print(vbmod.VALUE, json.load(open('/settings.json')), "
              "sorted(os.listdir('/')))")
    assert out.strip() == "7 {'a': 1} ['lib', 'settings.json']"


def test_without_resume_mpremote_soft_resets(vb):
    mpr(vb.device, "exec", "marker = 1")
    boots = vb.boots
    out = mpr(vb.device, "exec", "print('marker' in globals())", resume=False)
    assert out.strip() == "False"
    assert vb.boots == boots + 1
    assert "MPY: soft reboot" in vb.console_text()


def test_sys_exit_soft_reboots_and_keeps_raw_repl(vb):
    res = subprocess.run([str(MPREMOTE), "connect", vb.device, "resume", "exec", "import sys; sys.exit()",
                          "+", "exec", "print('still here')"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "still here" in res.stdout


def test_main_py_runs_at_boot_and_mpremote_interrupts_it(tmp_path):
    (tmp_path / "boot.py").write_text("print('boot ran')\n")
    (tmp_path / "main.py").write_text(
        "import time\nn = 0\nwhile True:\n    n += 1\n    print('tick' * 50, n)\n    time.sleep_ms(1)\n")
    with VirtualBoard(fs_root=tmp_path) as vb:
        wait_console(vb, "tick")
        time.sleep(0.5)  # nobody connected: output is dropped, main.py never blocks
        out = mpr(vb.device, "exec", "print('n', n > 100)")
        assert out.strip() == "n True"
        assert "KeyboardInterrupt" in vb.console_text()


def test_interrupts_asyncio_server(tmp_path):
    (tmp_path / "main.py").write_text(
        "import asyncio\n"
        "async def main():\n"
        "    await asyncio.start_server(lambda r, w: w.close(), '127.0.0.1', 0)\n"
        "    print('serving')\n"
        "    while True:\n"
        "        await asyncio.sleep(1)\n"
        "asyncio.run(main())\n")
    with VirtualBoard(fs_root=tmp_path) as vb:
        wait_console(vb, "serving")
        assert mpr(vb.device, "exec", "print('in')").strip() == "in"


def test_friendly_repl_ctrl_d_reboots_and_input_reaches_programs(tmp_path):
    (tmp_path / "main.py").write_text("print('main ran')\n")
    with VirtualBoard(fs_root=tmp_path) as vb:
        s = serial.Serial(vb.device, timeout=0.2)
        try:
            s.write(b"\r\x03")
            wait_console(vb, ">>> ")
            # A program reading stdin gets what is typed, as on a board.
            s.write(b"x = input('? ')\r")
            wait_console(vb, "? ")
            s.write(b"hello\r")
            s.write(b"print(x.upper())\r")
            wait_console(vb, "HELLO")
            s.write(b"\x04")  # Ctrl-D at >>>: soft reboot, main.py runs again
            wait_console(vb, "MPY: soft reboot")
            deadline = time.monotonic() + 10
            while vb.console_text().count("main ran") < 2:
                assert time.monotonic() < deadline, vb.console_text()
                time.sleep(0.05)
        finally:
            s.close()


def test_hard_reset_runs_main_again(tmp_path):
    (tmp_path / "main.py").write_text("print('main ran')\n")
    with VirtualBoard(fs_root=tmp_path) as vb:
        wait_console(vb, "main ran")
        mpr(vb.device, "reset")  # mpremote's hard reset: machine.reset()
        deadline = time.monotonic() + 10
        while vb.console_text().count("main ran") < 2:
            assert time.monotonic() < deadline, vb.console_text()
            time.sleep(0.05)
        vb.reset()  # the same from Python (a power cycle)
        while vb.console_text().count("main ran") < 3:
            assert time.monotonic() < deadline + 10, vb.console_text()
            time.sleep(0.05)
        assert mpr(vb.device, "exec", "print(2)").strip() == "2"


def test_mpremote_mount(vb):
    out = mpr(vb.device, "mount", str(REPO / "tests" / "support" / "mpy"), "exec",
              "import unittest; print(unittest.TestCase.__name__)")
    assert "TestCase" in out


def test_sockets_work_from_the_board(vb, mosquitto):
    # The board reaches host services on 127.0.0.1, e.g. a test broker.
    out = mpr(vb.device, "exec",
              "import socket; s = socket.socket(); "
              "s.connect(socket.getaddrinfo('127.0.0.1', %d)[0][-1]); "
              "s.write(b'\\x10\\x0e\\x00\\x04MQTT\\x04\\x02\\x00\\x0a\\x00\\x02vb'); "
              "print(s.read(4)); s.close()" % mosquitto.port)
    assert out.strip() == "b' \\x02\\x00\\x00'"


def test_board_can_listen_for_host_clients(vb):
    port = free_port()
    mpr(vb.device, "exec",
        "import socket; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        "s.bind(socket.getaddrinfo('127.0.0.1', %d)[0][-1]); s.listen(1)" % port)
    wait_port("127.0.0.1", port, timeout=5)
