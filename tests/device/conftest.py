"""Board fixtures: a real board when DEVICE is set (e.g. DEVICE=/dev/ttyUSB0),
else a virtual board (tools/vboard.py: the Unix port behind a pty).

Network tests on a real board (on Wi-Fi via boot.py and secrets.py) need two
addresses: HOST_IP, this machine's address as the board sees it (the host's
mosquitto then listens on all interfaces), and BOARD_IP, the board's (for the
host's clients of the broker on the board). A virtual board uses 127.0.0.1."""

import os
import threading

import pytest

from support.harness import Mosquitto, run_mpremote


class Board:
    def __init__(self, device, vboard=None):
        self.device = device
        self.vboard = vboard
        # Host directory that is the board's "/" (virtual boards only).
        self.fs_root = vboard.fs_root if vboard else None

    @property
    def is_virtual(self):
        return self.vboard is not None

    def mpremote(self, *args, timeout=60, check=True, resume=True):
        return run_mpremote(self.device, *args, timeout=timeout, check=check, resume=resume,
                            console=self.console)

    def exec(self, code, timeout=60):
        """Run code in the board's raw REPL; returns what it printed."""
        return self.mpremote("exec", code, timeout=timeout).stdout

    def start(self, script, timeout):
        """`mpremote run script` in a thread, for a script that serves while
        the test acts as its peer. Returns join() -> what it printed (or an
        AssertionError naming the failure)."""
        result = {}

        def run():
            try:
                result["out"] = self.mpremote("run", script, timeout=timeout).stdout
            except AssertionError as e:
                result["err"] = str(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()

        def join():
            t.join(timeout + 5)
            assert "err" not in result, result.get("err")
            assert "out" in result, "mpremote run still going after %ss" % timeout
            return result["out"]

        return join

    def console(self):
        """Everything a virtual board printed (empty for a real one)."""
        return self.vboard.console_text() if self.vboard else ""


@pytest.fixture(scope="session")
def board():
    """One board for the session, like the one physical board on the bench.
    Tests should clean up files they put on it."""
    device = os.environ.get("DEVICE")
    if device:
        yield Board(device)
        return
    from vboard import VirtualBoard

    with VirtualBoard() as vb:
        yield Board(vb.device, vb)


@pytest.fixture
def fresh_board():
    """A new virtual board with an empty filesystem (skipped on real hardware)."""
    if os.environ.get("DEVICE"):
        pytest.skip("needs a virtual board")
    from vboard import VirtualBoard

    # mip installs .py source, compiled on the board: on this 64-bit port the
    # whole broker's source needs the word-adjusted heap (a 32-bit board's 128 KB).
    with VirtualBoard(heap="128wK") as vb:
        yield Board(vb.device, vb)


@pytest.fixture
def mpremote(board):
    """mpremote(*args, timeout=60, check=True, resume=True) on the session board."""
    return board.mpremote


def _addr(board, var, what):
    if board.is_virtual:
        return "127.0.0.1"
    ip = os.environ.get(var)
    if not ip:
        pytest.skip("real board: set %s=<%s> for the network tests" % (var, what))
    return ip


@pytest.fixture
def host_ip(board):
    """Where the board reaches this machine."""
    return _addr(board, "HOST_IP", "this machine's LAN address")


@pytest.fixture
def board_ip(board):
    """Where this machine reaches the board's broker."""
    return _addr(board, "BOARD_IP", "the board's LAN address")


@pytest.fixture
def board_mosquitto(board, host_ip, tmp_path):
    """A private mosquitto the board can reach: loopback for a virtual board,
    every interface for a real one."""
    m = Mosquitto(tmp_path / "mosq", host="127.0.0.1" if board.is_virtual else "0.0.0.0")
    m.start()
    yield m
    m.kill()
