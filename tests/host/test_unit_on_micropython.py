"""Run every tests/unit/test_*.py on the MicroPython Unix port too (128K heap,
unittest shim from tests/support/mpy), so the library is checked on the
interpreter it ships for, not only on CPython.

The library is imported as .mpy built by tools/build_mpy.py, as deployed to a
board: compiling its source would eat heap that a board never spends on it."""

from pathlib import Path

import pytest

from support.harness import REPO, run_mpy, unittest_count

UNIT_FILES = sorted((REPO / "tests" / "unit").glob("test_*.py"))


@pytest.fixture(scope="module")
def mpy_lib(tmp_path_factory):
    from build_mpy import build

    return build("unix", tmp_path_factory.mktemp("mpy-unix"), quiet=True) / "lib"


@pytest.mark.parametrize("path", UNIT_FILES, ids=[p.name for p in UNIT_FILES])
def test_unit_file_on_micropython(path: Path, mpy_lib):
    # Below pytest-timeout (120 s) so our message, with the output, wins.
    res = run_mpy(path, heap="128K", timeout=100, check=False, cwd=path.parent, lib=mpy_lib)
    out = "--- stdout ---\n%s\n--- stderr ---\n%s" % (res.stdout, res.stderr)
    assert res.returncode == 0, "%s failed on MicroPython (exit %d)\n%s" % (
        path.name, res.returncode, out)
    ran = unittest_count(res.stdout)
    assert ran, "%s ran no tests on MicroPython (does it end with unittest.main()?)\n%s" % (
        path.name, out)
