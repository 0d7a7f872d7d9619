"""Each board's build and settings run as that board would run them, as far
as the Unix port can stand in.

The library is the board's own .mpy build (build_mpy.py esp32|rp2040): 19 of
its modules are portable bytecode and run here as they are; the few with
viper/native hot loops carry the board's machine code (xtensawin, armv6m),
which only that chip runs, so for those alone the x64 build of the same
source stands in (their headers are checked to be the board's arch).

main.run() gets the board's settings.json in a heap of the board's estimated
free RAM, word-adjusted for this 64-bit port ("<N>wK": the same objects a
32-bit board holds in N KB). The broker must start, take max_clients
connections from paho at once, route between them, and refuse one more with
the protocol's answer; the client from the same build makes QoS 0/1/2 round
trips through mosquitto. Not proof on hardware: the board numbers are
estimates."""

import json
import os
import textwrap

import pytest

from build_mpy import build
from support.harness import REPO, free_port, start_mpy, wait_port, PahoClient


ARCH = {"esp32": 10, "rp2040": 4}  # the .mpy header's native arch: xtensawin, armv6m


@pytest.fixture(scope="module")
def x64_lib(tmp_path_factory):
    return build("unix", tmp_path_factory.mktemp("unix"), quiet=True) / "lib"


def board_lib(board, x64_lib, tmp):
    """build/<board>/lib as it would go on the board, with x64 stand-ins for
    the modules that hold machine code; returns (lib, bytecode names, native names)."""
    import shutil
    lib = build(board, tmp / board, quiet=True) / "lib"
    portable, native = [], []
    for f in sorted((lib / "umqtt_full").glob("*.mpy")):
        head = f.read_bytes()[:4]
        assert head[:2] == b"M\x06", f
        arch = head[2] >> 2
        if arch == 0:
            portable.append(f.stem)
            continue
        assert arch == ARCH[board], (f.name, arch)
        native.append(f.stem)
        stand_in = x64_lib / "umqtt_full" / f.name
        assert stand_in.read_bytes()[2] >> 2 == 2  # x64
        shutil.copyfile(stand_in, f)
    return lib, portable, native


@pytest.fixture(scope="module", params=["esp32", "rp2040"])
def board(request):
    return request.param


@pytest.fixture(scope="module")
def mpy_lib(board, x64_lib, tmp_path_factory):
    lib, portable, native = board_lib(board, x64_lib, tmp_path_factory.mktemp("board"))
    # The codec, session, transport and the broker's core stay portable:
    # machine code is only in the few hot-loop modules.
    assert {"codec", "wire", "props", "session", "transport", "broker", "broker_route",
            "broker_proto"} <= set(portable), portable
    assert len(native) <= 8, native
    return lib


def test_board_client_from_its_build_round_trips(board, mpy_lib, mosquitto, paho_client):
    from support.harness import run_mpy
    watch = paho_client(protocol=5)
    watch.subscribe("b/#", qos=2)
    r = run_mpy("""
import sys
from umqtt_full import MQTTClient
import umqtt_full.client as cl, umqtt_full.codec as co
print("FROM", cl.__file__, co.__file__)
got = []
c = MQTTClient("board-%s", "127.0.0.1", %d, keepalive=30, version=5)
c.set_callback(lambda t, m: got.append((t, m)))
c.connect()
c.subscribe(b"b/in", 2)
for q in (0, 1, 2):
    c.publish(b"b/out", b"q%%d" %% q, qos=q)
    c.publish(b"b/in", b"back%%d" %% q, qos=q)
while len(got) < 3:
    c.wait_msg()
print("GOT", sorted(m for t, m in got))
c.disconnect()
""" % (board, mosquitto.port), lib=mpy_lib, timeout=60)
    assert "umqtt_full/client.mpy" in r.stdout and "umqtt_full/codec.mpy" in r.stdout, r.stdout
    assert "GOT [b'back0', b'back1', b'back2']" in r.stdout, r.stdout
    out = sorted((m.topic, m.payload, m.qos) for m in watch.wait_for(6, timeout=5)
                 if m.topic == "b/out")
    assert out == [("b/out", b"q0", 0), ("b/out", b"q1", 1), ("b/out", b"q2", 2)]


def test_board_broker_settings_fit_and_hold_max_clients(board, mpy_lib, tmp_path):
    cfg = json.loads((REPO / "boards" / board / "board.json").read_text())
    s = cfg["settings"]
    assert s["roles"] == ["broker"]
    port = free_port()
    s = dict(s, broker_host="127.0.0.1", broker_port=port, led_pin=None)
    heap = "%dwK" % (cfg["heap"]["free_estimate"] // 1024)
    script = tmp_path / "board_main.py"
    script.write_text(textwrap.dedent("""
        import gc, json, sys
        sys.path.append(%r)
        import main
        gc.collect()
        print("FREE_BEFORE", gc.mem_free())
        main.run(json.loads(%r))
        """ % (os.path.join(str(REPO), "firmware"), json.dumps(s))))
    n = s["broker"]["max_clients"]
    clients = []
    with start_mpy(str(script), heap=heap, lib=mpy_lib, log_path=tmp_path / "broker.log") as p:
        try:
            wait_port("127.0.0.1", port, timeout=20, proc=p)
            for i in range(n):
                clients.append(PahoClient("127.0.0.1", port, client_id="c%d" % i,
                                          protocol=5 if i % 2 else 4))
            clients[0].subscribe("t/#", qos=1)
            clients[-1].publish("t/x", b"from the last slot", qos=1)
            got = clients[0].wait_for(1, timeout=5)
            assert got[0].payload == b"from the last slot"
            with pytest.raises(AssertionError, match="CONNACK refused|could not connect"):
                clients.append(PahoClient("127.0.0.1", port, client_id="one-too-many",
                                          protocol=5, timeout=5))
        finally:
            for c in clients:
                c.disconnect()
        out = p.output()
    assert "MemoryError" not in out and "Traceback" not in out, out
    assert "main: broker on port %d" % port in out, out
