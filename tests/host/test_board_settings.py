"""Each board's settings (boards/<board>/board.json) run as that board would
run them, as far as the Unix port can stand in: main.run() with the board's
settings.json, the library from the .mpy build (x64 here; the board's own
arch cannot run on this host), in a heap of the board's estimated free RAM
word-adjusted for this 64-bit port ("<N>wK": the same objects a 32-bit
board holds in N KB). The broker must start, take max_clients connections
from paho at once, route between them, and refuse one more with the
protocol's answer. Not proof on hardware: the board numbers are estimates."""

import json
import os
import textwrap

import pytest

from build_mpy import build
from support.harness import REPO, free_port, start_mpy, wait_port, PahoClient


@pytest.fixture(scope="module")
def mpy_lib(tmp_path_factory):
    return build("unix", tmp_path_factory.mktemp("unix"), quiet=True) / "lib"


@pytest.mark.parametrize("board", ["esp32", "rp2040"])
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
