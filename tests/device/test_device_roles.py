"""firmware/main.py as a board runs it: the .mpy build and main.py copied
with mpremote, then main's roles started from settings (the same dict that
build_mpy writes to /settings.json), with paho on the host as the world:
the client role against mosquitto, and broker + client on the one board."""

import json
import os
import textwrap

import pytest

from support.harness import free_port, wait_port
from test_device_client import deploy_mpy

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RUN_S = 8


@pytest.fixture
def deployed(board, mpremote, tmp_path):
    files = deploy_mpy(board, mpremote, tmp_path / "build")
    mpremote("fs", "cp", os.path.join(ROOT, "firmware", "main.py"), ":main_roles.py")
    yield files
    mpremote("fs", "rm", ":main_roles.py", check=False)
    mpremote("fs", "rm", "-r", ":lib/umqtt_full", check=False)


def start_roles(board, tmp_path, settings, seconds=RUN_S):
    """main.run(settings, seconds) on the board in the background; returns
    join() -> what the board printed, checked for a clean run."""
    script = tmp_path / "roles.py"
    # Imported under another name so the board's own boot does not run it.
    script.write_text(textwrap.dedent("""
        import json
        import main_roles
        main_roles.run(json.loads(%r), %d)
        print("ROLES DONE")
        """ % (json.dumps(settings), seconds)))
    join = board.start(script, seconds + 30)

    def finish():
        out = join()
        assert "ROLES DONE" in out and "Traceback" not in out, out
        return out

    return finish


def check_device(watch, pub, prefix):
    # Retained "online", telemetry, ping/pong, LED command.
    status = watch.wait_for(1, timeout=15, topic=prefix + "/status")
    assert (status[0].payload, status[0].retain) in ((b"online", True), (b"online", False))
    heap = watch.wait_for(1, timeout=5, topic=prefix + "/heap")
    assert int(heap[0].payload) > 1000
    up = watch.wait_for(2, timeout=5, topic=prefix + "/uptime")
    assert [int(m.payload) for m in up][:2] == sorted(int(m.payload) for m in up[:2])
    pub.publish(prefix + "/cmd/ping", b"hello 1", qos=1)
    pong = watch.wait_for(1, timeout=5, topic=prefix + "/pong")
    assert pong[0].payload == b"hello 1" and pong[0].qos == 1
    pub.publish(prefix + "/cmd/led", b"on", qos=1)
    assert watch.wait_for(1, timeout=5, topic=prefix + "/led")[0].payload == b"on"
    pub.publish(prefix + "/cmd/led", b"toggle", qos=0)
    assert [m.payload for m in watch.wait_for(2, timeout=5, topic=prefix + "/led")] == [b"on", b"off"]


def test_client_role_against_mosquitto(board, mpremote, deployed, board_mosquitto, host_ip,
                                       paho_client, tmp_path):
    prefix = "site/dev-%d" % os.getpid()
    settings = {"board": "vboard", "roles": ["client"], "led_pin": None,
                "client": {"server": host_ip, "port": board_mosquitto.port, "client_id": "dev-roles",
                           "topic_prefix": prefix, "interval": 1, "version": 5}}
    watch = paho_client("127.0.0.1", board_mosquitto.port, protocol=5, client_id="watch")
    watch.subscribe(prefix + "/#", qos=1)
    pub = paho_client("127.0.0.1", board_mosquitto.port, protocol=4, client_id="ctl")
    finish = start_roles(board, tmp_path, settings)
    try:
        check_device(watch, pub, prefix)
    finally:
        out = finish()
    assert "main: client dev-roles on" in out, out
    # A clean stop publishes "offline" itself, retained for later subscribers.
    watch.wait_for(2, timeout=5, topic=prefix + "/status")
    late = paho_client("127.0.0.1", board_mosquitto.port, protocol=4, client_id="late")
    late.subscribe(prefix + "/status", qos=1)
    got = late.wait_for(1, timeout=5)
    assert [(m.payload, m.retain) for m in got] == [(b"offline", True)]


@pytest.fixture
def both_board(board, tmp_path):
    """The board for broker + client: a real one as it is, else a virtual
    board at 128wK. Both roles' code and tables do not fit this 64-bit port's
    128K (about 64 KB of a 32-bit board's objects); 128wK is what a 32-bit
    board's 128 KB holds."""
    if not board.is_virtual:
        files = deploy_mpy(board, board.mpremote, tmp_path / "build")
        board.mpremote("fs", "cp", os.path.join(ROOT, "firmware", "main.py"), ":main_roles.py")
        yield board, files
        board.mpremote("fs", "rm", ":main_roles.py", check=False)
        return
    from vboard import VirtualBoard

    with VirtualBoard(heap="128wK") as vb:
        b = type(board)(vb.device, vb)  # tests/device/conftest.py's Board
        files = deploy_mpy(b, b.mpremote, tmp_path / "build")
        b.mpremote("fs", "cp", os.path.join(ROOT, "firmware", "main.py"), ":main_roles.py")
        yield b, files


def test_broker_and_client_roles_on_one_board(both_board, board_ip, paho_client, tmp_path):
    board, _ = both_board
    port = free_port()
    prefix = "home/panel"
    settings = {"board": "vboard", "roles": ["broker", "client"], "led_pin": None,
                "broker_host": "127.0.0.1" if board.is_virtual else "0.0.0.0", "broker_port": port,
                "broker": {"max_clients": 4, "log_level": "none"},
                "client": {"client_id": "panel", "topic_prefix": prefix, "interval": 1}}
    finish = start_roles(board, tmp_path, settings)
    try:
        wait_port(board_ip, port, timeout=15)
        # Host clients of the board's broker see the board's own client.
        watch = paho_client(board_ip, port, protocol=5, client_id="watch")
        watch.subscribe(prefix + "/#", qos=1)
        pub = paho_client(board_ip, port, protocol=4, client_id="ctl")
        check_device(watch, pub, prefix)
    finally:
        out = finish()
    assert "main: broker on port %d" % port in out, out
    assert "main: client panel on 127.0.0.1:%d" % port in out, out


def test_client_role_without_server_says_so(board, mpremote, deployed, tmp_path):
    out = start_roles(board, tmp_path, {"roles": ["client", "lamp"]}, seconds=1)()
    assert "unknown role 'lamp'" in out and "client role needs client.server" in out, out
