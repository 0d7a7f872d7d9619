"""Board fixtures: a real board when DEVICE is set (e.g. DEVICE=/dev/ttyUSB0),
else a virtual board (tools/vboard.py: the Unix port behind a pty)."""

import os

import pytest

from support.harness import run_mpremote


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

    with VirtualBoard() as vb:
        yield Board(vb.device, vb)


@pytest.fixture
def mpremote(board):
    """mpremote(*args, timeout=60, check=True, resume=True) on the session board."""
    return board.mpremote
