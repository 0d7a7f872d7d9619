"""Smoke tests for whatever board tests/device runs on (virtual by default)."""

import textwrap
import time


def test_exec(mpremote):
    assert mpremote("exec", "print(6 * 7)").stdout.strip() == "42"


def test_fs_cp_and_run(board, mpremote, tmp_path):
    src = tmp_path / "smoke_hello.py"
    src.write_text("X = sum(range(10))\nprint('hello from', __name__, X)\n")
    mpremote("fs", "cp", src, ":smoke_hello.py")
    try:
        if board.is_virtual:
            assert (board.fs_root / "smoke_hello.py").read_text() == src.read_text()
        assert "smoke_hello.py" in mpremote("fs", "ls").stdout
        # `run` sends the host file; `import` loads the copy on the board.
        assert "hello from __main__ 45" in mpremote("run", src).stdout
        assert "hello from smoke_hello 45" in mpremote("exec", "import smoke_hello").stdout
    finally:
        mpremote("fs", "rm", ":smoke_hello.py")


def test_board_layout(mpremote):
    out = mpremote("exec", "import sys, os; print(sys.path); print(os.getcwd())").stdout
    assert "'/lib'" in out  # boards import from /lib, and so does the virtual one
    assert out.strip().endswith("/")


def test_heap_is_board_sized(board, mpremote):
    free = int(mpremote("exec", "import gc; gc.collect(); print(gc.mem_free())").stdout)
    assert free > 32 * 1024
    if board.is_virtual and board.vboard.heap == "128K":
        # Board-sized, not the Unix port's 2 MB default.
        assert free < 140000


def test_ctrl_c_interrupts_running_program(mpremote, tmp_path):
    loop = tmp_path / "spin.py"
    loop.write_text(textwrap.dedent("""
        import time
        n = 0
        while True:
            n += 1
            time.sleep_ms(5)
        """))
    mpremote("run", "--no-follow", loop)
    time.sleep(0.3)
    # mpremote's Ctrl-C stops the loop; the REPL keeps the globals it left.
    out = mpremote("exec", "print('n', n > 0)").stdout
    assert "n True" in out


def test_soft_reset_clears_state(mpremote):
    mpremote("exec", "smoke_marker = 1")
    assert "1" in mpremote("exec", "print(smoke_marker)").stdout
    mpremote("soft-reset")
    res = mpremote("exec", "print(smoke_marker)", check=False)
    assert res.returncode != 0 and "NameError" in res.stdout + res.stderr
