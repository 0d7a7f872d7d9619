# MQTT 5 enhanced authentication on the broker (4.12): the program hosting the
# broker passes auth(client_id, method, data, step); a challenge-response
# (SHA-256 of a shared secret and the broker's nonce) runs over CONNECT, AUTH
# and CONNACK with our client, then again as re-authentication; a wrong answer
# is refused with the handler's reason code, and a broker without a handler
# refuses every method with 0x8C.
import textwrap

from support.harness import run_mpy, start_mpy, free_port, wait_port
from test_broker_helpers import HEAP, Raw, props, s16, broker_factory  # noqa: F401

BROKER = textwrap.dedent("""
    import hashlib
    from umqtt_full.broker import Broker
    NONCE = b"nonce-42"
    steps = []
    def auth(cid, method, data, step):
        steps.append((cid, step))
        if method != "SHA256-CHAL":
            return 0x8C, None
        if step == 0:
            return 0x18, NONCE                      # the challenge
        if data == hashlib.sha256(b"s3cret" + NONCE).digest():
            print("AUTH ok", cid, step)
            return 0, b"welcome"
        print("AUTH bad", cid, step)
        return 0x87, None
    b = Broker({"log_level": "info"}, auth=auth)
    b.listen("127.0.0.1", %d)
    b.serve_forever()
""")

CLIENT = textwrap.dedent("""
    import hashlib
    from umqtt_full import MQTTClient, MQTTException
    def answer(method, data):
        return hashlib.sha256(%(secret)r + data).digest()
    c = MQTTClient("dev-%(name)s", "127.0.0.1", %(port)d, version=5)
    c.set_auth("SHA256-CHAL", b"", answer)
    try:
        c.connect()
    except MQTTException as e:
        print("R refused 0x%%02x" %% e.args[0])
        raise SystemExit
    print("R connack_data", c.connack_props.get(0x16))
    got = []
    c.set_callback(lambda t, m: got.append(m))
    c.subscribe("a/t", 1)
    c.publish("a/t", b"hi", qos=1)
    while not got:
        c.wait_msg(2)
    print("R got", got)
    c.reauthenticate()
    for i in range(3):
        c.wait_msg(0.5)
    c.publish("a/t", b"still", qos=1)
    while len(got) < 2:
        c.wait_msg(2)
    print("R after_reauth", got[1])
    c.disconnect()
""")


def results(out):
    return dict(l[2:].split(" ", 1) for l in out.splitlines() if l.startswith("R "))


def test_challenge_response_connect_and_reauth(tmp_path):
    port = free_port()
    b = start_mpy(BROKER % port, heap=HEAP, log_path=tmp_path / "broker.log")
    try:
        wait_port("127.0.0.1", port, 15)
        r = results(run_mpy(CLIENT % dict(secret=b"s3cret", name="good", port=port)).stdout)
        assert r["connack_data"] == "b'welcome'"      # Authentication Data in CONNACK
        assert r["got"] == "[b'hi']"
        assert r["after_reauth"] == "b'still'"
        r = results(run_mpy(CLIENT % dict(secret=b"wrong", name="bad", port=port)).stdout)
        assert r["refused"] == "0x87"
        log = b.output()
        # CONNECT exchange (step 0 then 1), then re-authentication (0 then 1).
        assert log.count("AUTH ok dev-good 1") == 2, log
        assert "AUTH bad dev-bad 1" in log, log
    finally:
        b.stop()


def test_no_handler_refuses_every_method(broker_factory):
    b = broker_factory()
    r = Raw(b.port)
    # v5 CONNECT with Authentication Method "X".
    var = s16(b"MQTT") + bytes([5, 0x02, 0, 60]) + props(b"\x15" + s16(b"X"))
    body = var + s16(b"noauth")
    r.send(bytes([0x10, len(body)]) + body)
    assert r.read() == (0x20, b"\x00\x8c\x00")


def test_auth_out_of_step_is_a_protocol_error(tmp_path):
    # An AUTH before any CONNECT is not a CONNECT: the connection is closed.
    port = free_port()
    b = start_mpy(BROKER % port, heap=HEAP, log_path=tmp_path / "broker.log")
    try:
        wait_port("127.0.0.1", port, 15)
        r = Raw(port)
        r.send(b"\xf0\x00")
        assert r.closed()
    finally:
        b.stop()
