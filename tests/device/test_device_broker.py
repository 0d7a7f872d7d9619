"""The tiny broker as a user runs it on a board: the .mpy build copied to
/lib, a script sent with `mpremote run` that listens and polls, and MQTT
clients on the host (paho, both protocol versions) talking through it."""

import textwrap

import pytest

from support.harness import free_port, wait_port
from test_device_client import deploy_mpy


@pytest.fixture
def deployed(board, mpremote, tmp_path):
    files = deploy_mpy(board, mpremote, tmp_path / "build")
    yield files
    mpremote("fs", "rm", "-r", ":lib/umqtt_full", check=False)


SERVE_S = 6


def test_broker_on_board_routes_between_host_clients(board, mpremote, deployed, paho_client,
                                                     board_ip, tmp_path):
    assert "broker.mpy" in deployed
    port = free_port()
    script = tmp_path / "broker_serve.py"
    script.write_text(textwrap.dedent("""
        import time
        from umqtt_full import Broker
        # 4 clients, 5 sessions: this 64-bit 128K heap holds about what 64 KB
        # holds on a 32-bit board.
        b = Broker({"max_clients": 4, "max_sessions": 5, "log_level": "none"})
        b.listen(%r, %d)
        print("LISTENING")
        end = time.ticks_add(time.ticks_ms(), %d)
        while time.ticks_diff(end, time.ticks_ms()) > 0:
            b.poll(20)
        b.close()
        print("STOPPED")
        """ % ("127.0.0.1" if board.is_virtual else "0.0.0.0", port, SERVE_S * 1000)))
    join = board.start(script, SERVE_S + 20)
    try:
        wait_port(board_ip, port, timeout=10)
        sub = paho_client(board_ip, port, protocol=5, client_id="host-sub")
        sub.subscribe("board/+/t", qos=1)
        pub = paho_client(board_ip, port, protocol=4, client_id="host-pub")
        pub.publish("board/kitchen/t", b"21.5", qos=1, timeout=5)
        pub.publish("board/hall/t", b"19.0", qos=0, timeout=5)
        pub.publish("other/topic", b"not for you", qos=1, timeout=5)
        # Retained on the board's broker, delivered to a later subscriber.
        pub.publish("board/status", b"up", qos=1, retain=True, timeout=5)
        msgs = sub.wait_for(2, timeout=5)
        late = paho_client(board_ip, port, protocol=4, client_id="host-late")
        late.subscribe("board/status", qos=1)
        retained = late.wait_for(1, timeout=5)
    finally:
        out = join()
    assert "LISTENING" in out and "STOPPED" in out, out
    assert "Traceback" not in out, out
    got = sorted((m.topic, m.payload, m.qos) for m in msgs)
    assert got == [("board/hall/t", b"19.0", 0), ("board/kitchen/t", b"21.5", 1)]
    assert [(m.topic, m.payload, m.retain) for m in retained] == [("board/status", b"up", True)]
