"""The client as a user runs it: the library cross-compiled to .mpy
(tools/build_mpy.py), copied to the board's /lib with mpremote, and a script
sent with `mpremote run` that talks to a real mosquitto on the host."""

import os
import textwrap

import pytest

from build_mpy import build


def deploy_mpy(board, mpremote, out):
    """Build .mpy files for the board into `out` and copy lib/umqtt_full to
    the board's /lib, like `mpremote fs cp -r` after `make mpy`. Returns the
    list of files on the board."""
    name = os.environ.get("BOARD") or ("unix" if board.is_virtual else None)
    if name is None or (name == "unix" and not board.is_virtual):
        pytest.fail("a real board needs its own build: set BOARD=esp32|rp2040 with DEVICE")
    lib = build(name, out, quiet=True) / "lib" / "umqtt_full"
    # Start from a clean heap, as after plugging the board in: earlier
    # sessions' leftovers fragment a 128K heap enough to fail the copy.
    mpremote("soft-reset")
    mpremote("fs", "mkdir", ":lib", check=False)
    mpremote("fs", "rm", "-r", ":lib/umqtt_full", check=False)
    mpremote("fs", "cp", "-r", lib, ":lib/", timeout=120)
    return sorted(p.name for p in lib.glob("*.mpy"))


@pytest.fixture
def deployed(board, mpremote, tmp_path):
    files = deploy_mpy(board, mpremote, tmp_path / "build")
    yield files
    mpremote("fs", "rm", "-r", ":lib/umqtt_full", check=False)


def test_mpy_build_is_what_the_board_imports(board, mpremote, deployed):
    assert "client.mpy" in deployed and "__init__.mpy" in deployed
    if board.is_virtual:
        on_board = sorted(p.name for p in (board.fs_root / "lib" / "umqtt_full").iterdir())
        assert on_board == deployed  # no .py beside them to shadow the build
    out = mpremote("exec", "import umqtt_full.client as c; print(c.__file__)").stdout
    assert out.strip().endswith("umqtt_full/client.mpy"), out


def test_client_on_board_round_trip_through_mosquitto(board, mpremote, deployed, board_mosquitto,
                                                      host_ip, paho_client, tmp_path):
    mosquitto = board_mosquitto
    watcher = paho_client("127.0.0.1", mosquitto.port, protocol=5)
    watcher.subscribe("dev/board/#", qos=1)
    script = tmp_path / "client_round_trip.py"
    script.write_text(textwrap.dedent("""
        import gc
        from umqtt_full import MQTTClient
        got = []
        def cb(topic, msg):
            got.append((bytes(topic), bytes(msg)))
        c = MQTTClient("board-client", %r, port=%d, keepalive=30, version=5)
        c.set_callback(cb)
        c.connect()
        print("granted", c.subscribe("dev/board/echo", qos=1))
        c.publish("dev/board/echo", b"hello from the board", qos=1)
        for _ in range(50):
            if got:
                break
            c.wait_msg(0.1)
        print("got", got)
        c.disconnect()
        gc.collect()
        print("free", gc.mem_free())
        print("DONE")
        """ % (host_ip, mosquitto.port)))
    out = mpremote("run", script, timeout=30).stdout
    assert "DONE" in out, out
    assert "granted 1" in out, out
    assert "got [(b'dev/board/echo', b'hello from the board')]" in out, out
    # The board's QoS 1 publish really went through the broker to another client.
    msgs = watcher.wait_for(1, timeout=10, topic="dev/board/echo")
    assert msgs[0].payload == b"hello from the board"
    assert msgs[0].qos == 1


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("package, present, absent", [
    ("package-client.json", "MQTTClient", "Broker"),
    ("package-broker.json", "Broker", "MQTTClient"),
])
def test_mip_installs_each_half_alone(fresh_board, package, present, absent):
    # `mpremote mip install github:ORG/REPO/package-client.json` reads the same
    # file; a local path resolves its relative URLs the same way.
    res = fresh_board.mpremote("mip", "install", "--target", "/lib",
                               os.path.join(REPO, package), timeout=60)
    assert "Installing: /lib/umqtt_full/__init__.py" in res.stdout, res.stdout
    out = fresh_board.exec(textwrap.dedent("""
        import umqtt_full
        print("present", getattr(umqtt_full, %r).__name__)
        try:
            getattr(umqtt_full, %r)
            print("absent no")
        except AttributeError:
            print("absent yes")
        """ % (present, absent)))
    assert "present %s" % present in out, out
    assert "absent yes" in out, out
