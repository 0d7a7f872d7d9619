"""Tests of the test harness itself, so a broken fixture is never mistaken
for a broken library."""

import socket
import ssl
import textwrap
import time

import pytest

from support.harness import (
    MpyError,
    free_port,
    run_mpy,
    unittest_count,
    wait_port,
)


def test_run_mpy_returns_output(micropython):
    res = run_mpy("import sys; print(sys.implementation.name, sys.argv[1:])", args=("a", "b"))
    assert res.returncode == 0
    # With -c, argv[0] is '-c' and the extra args follow it.
    assert "micropython" in res.stdout and "'a', 'b'" in res.stdout


def test_run_mpy_failure_shows_micropython_traceback():
    code = "def inner():\n    raise ValueError('boom-42')\ninner()\n"
    with pytest.raises(MpyError) as ei:
        run_mpy(code)
    msg = str(ei.value)
    assert "Traceback (most recent call last)" in msg
    assert "ValueError: boom-42" in msg
    assert "in inner" in msg
    assert ei.value.result.returncode == 1


def test_run_mpy_check_false_returns_result():
    res = run_mpy("import sys; sys.exit(3)", check=False)
    assert res.returncode == 3


def test_run_mpy_timeout_is_reported():
    with pytest.raises(MpyError, match="timed out"):
        run_mpy("import time\nprint('started')\ntime.sleep(30)", timeout=1)


def test_run_mpy_script_path_and_firmware_lib_on_path(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("import sys\nprint('path', sys.path)\nimport umqtt_full\nprint('pkg ok')\n")
    res = run_mpy(script)
    assert "pkg ok" in res.stdout
    assert "firmware/lib" in res.stdout


def test_heap_option_is_honoured():
    # 200K cannot fit a 128K heap, as it could not on an ESP32.
    with pytest.raises(MpyError, match="MemoryError"):
        run_mpy("b = bytearray(200 * 1024)", heap="128K")
    run_mpy("b = bytearray(200 * 1024)", heap="512K")
    res = run_mpy("import gc; gc.collect(); print(gc.mem_free())", heap="128K")
    assert 64 * 1024 < int(res.stdout) < 140000


def test_start_mpy_long_running_process(mpy_proc):
    port = free_port()
    server = mpy_proc(textwrap.dedent("""
        import socket, sys
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo('127.0.0.1', int(sys.argv[1]))[0][-1])
        s.listen(1)
        print('listening')
        while True:
            c, _ = s.accept()
            c.send(c.recv(64).upper())
            c.close()
        """), args=(port,))
    wait_port("127.0.0.1", port, timeout=10, proc=server.proc)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"ping")
        assert c.recv(64) == b"PING"
    assert server.poll() is None
    server.stop()
    assert "listening" in server.output()
    # Stopped with Ctrl-C: MicroPython reports the KeyboardInterrupt.
    assert "KeyboardInterrupt" in server.output()


def test_unittest_shim_runs_on_micropython(tmp_path):
    """tests/support/mpy/unittest.py: discovery, assertions, summary, exit code."""
    ok = tmp_path / "test_ok.py"
    ok.write_text(textwrap.dedent("""
        import unittest

        class Base:
            def test_inherited(self):
                self.assertTrue(True)

        class T(unittest.TestCase, Base):
            @classmethod
            def setUpClass(cls):
                cls.shared = 1

            def setUp(self):
                self.x = 41

            def tearDown(self):
                self.x = None

            def test_asserts(self):
                self.assertEqual(self.x + self.shared, 42)
                self.assertNotEqual(1, 2)
                self.assertTrue(1); self.assertFalse(0)
                self.assertIs(None, None); self.assertIsNone(None); self.assertIsNotNone(0)
                self.assertIn(1, (1, 2)); self.assertNotIn(3, (1, 2))
                self.assertAlmostEqual(0.1 + 0.2, 0.3)
                self.assertAlmostEqual(1.0, 1.05, delta=0.1)
                self.assertGreater(2, 1); self.assertLess(1, 2)

            def test_raises(self):
                with self.assertRaises(ValueError) as cm:
                    int("x")
                self.assertIsInstance(cm.exception, ValueError)
                self.assertRaises(KeyError, {}.__getitem__, "k")
                self.assertRaises((KeyError, IndexError), [].pop)

            def test_skip(self):
                self.skipTest("not here")

        if __name__ == "__main__":
            unittest.main()
        """))
    res = run_mpy(ok)
    assert unittest_count(res.stdout) == 4, res.stdout
    assert "OK (skipped=1)" in res.stdout

    bad = tmp_path / "test_bad.py"
    bad.write_text(textwrap.dedent("""
        import unittest

        class B(unittest.TestCase):
            def test_a_fails(self):
                self.assertEqual(1, 2)

            def test_b_errors(self):
                {}["missing"]

            def test_c_not_raised(self):
                with self.assertRaises(ValueError):
                    pass

            def test_d_passes(self):
                pass

        if __name__ == "__main__":
            unittest.main()
        """))
    res = run_mpy(bad, check=False)
    assert res.returncode == 1
    assert unittest_count(res.stdout) == 4
    assert "FAILED (failures=2, errors=1)" in res.stdout
    assert "FAIL: B.test_a_fails" in res.stdout and "AssertionError: 1 != 2" in res.stdout
    assert "ERROR: B.test_b_errors" in res.stdout and "KeyError" in res.stdout
    assert "ValueError not raised" in res.stdout
    # Sorted order, as the summary lines are printed while running.
    assert res.stdout.index("test_a_fails") < res.stdout.index("test_b_errors")


def test_mosquitto_relays_between_paho_clients(mosquitto, paho_client):
    sub = paho_client(client_id="sub", protocol=5)
    sub.subscribe("harness/#", qos=1)
    pub = paho_client(client_id="pub", protocol=4)  # 3.1.1 publisher, 5.0 subscriber
    pub.publish("harness/a", b"hello", qos=1)
    pub.publish("harness/b", b"world", qos=0)
    msgs = sub.wait_for(2, timeout=10)
    assert [(m.topic, m.payload) for m in msgs] == [("harness/a", b"hello"), ("harness/b", b"world")]
    assert msgs[0].qos == 1
    assert "sub" in mosquitto.log_text()  # log file is ours and readable
    assert mosquitto.pid and mosquitto.port != 1883


def test_mosquitto_restart_same_port(mosquitto, paho_client):
    port = mosquitto.port
    c = paho_client()
    mosquitto.restart()
    assert mosquitto.port == port
    # paho's own reconnect finds the broker again on the same port.
    deadline = time.monotonic() + 15
    while not (c.connected and c.client.is_connected()):
        assert time.monotonic() < deadline, "paho did not reconnect"
        time.sleep(0.1)
    mosquitto.kill()
    with pytest.raises(OSError):
        socket.create_connection((mosquitto.host, port), timeout=1).close()


def test_mosquitto_extra_conf_and_tls(mosquitto_factory, paho_client):
    m = mosquitto_factory(extra_conf="max_keepalive 120", tls=True)
    assert "max_keepalive 120" in m.conf_path.read_text()
    sub = paho_client(m.host, m.port, tls=m.tls)
    sub.subscribe("tls/t")
    pub = paho_client(m.host, m.port, tls=m.tls, protocol=4)
    pub.publish("tls/t", b"secret")
    assert sub.wait_for(1)[0].payload == b"secret"
    # The generated chain verifies for 127.0.0.1 with a stock client too.
    ctx = ssl.create_default_context(cafile=m.tls["cafile"])
    with socket.create_connection((m.host, m.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock:
            assert tls_sock.version()


def test_micropython_tls_to_mosquitto(mosquitto_factory):
    """The Unix port's ssl module can do MQTT over TLS against mosquitto,
    verifying the throwaway CA."""
    m = mosquitto_factory(tls=True)
    code = textwrap.dedent("""
        import socket, ssl, sys
        host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        with open(ca, "rb") as f:
            ctx.load_verify_locations(cadata=f.read())  # DER only: no PEM parser
        s = socket.socket()
        s.connect(socket.getaddrinfo(host, port)[0][-1])
        s = ctx.wrap_socket(s, server_hostname="localhost")
        # MQTT 3.1.1 CONNECT, client id "mp", clean session, keepalive 10
        s.write(b"\\x10\\x0e\\x00\\x04MQTT\\x04\\x02\\x00\\x0a\\x00\\x02mp")
        print("connack", s.read(4))
        s.close()
        """)
    res = run_mpy(code, args=(m.host, m.port, m.tls["ca_der"]), timeout=30)
    assert "connack b' \\x02\\x00\\x00'" in res.stdout
