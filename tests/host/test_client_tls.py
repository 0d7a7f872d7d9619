# TLS through MicroPython's ssl module against a mosquitto TLS listener with a
# CA and server certificate generated here (python cryptography).
import datetime
import ipaddress

import pytest

from test_client_helpers import run_mpy, results, mosquitto_factory  # noqa: F401


def _certs(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def save(key, cert, stem):
        (tmp_path / (stem + ".key")).write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        (tmp_path / (stem + ".crt")).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def ca(cn):
        k = ec.generate_private_key(ec.SECP256R1())
        c = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
             .public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(k, hashes.SHA256()))
        return k, c

    ca_key, ca_cert = ca("umqtt_full test CA")
    other_key, other_cert = ca("some other CA")
    k = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(k.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("127.0.0.1"), x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    save(ca_key, ca_cert, "ca")
    save(other_key, other_cert, "other")
    save(k, cert, "server")
    der = {n: c.public_bytes(serialization.Encoding.DER) for n, c in
           (("ca", ca_cert), ("other", other_cert))}
    return {"ca": str(tmp_path / "ca.crt"), "cert": str(tmp_path / "server.crt"),
            "key": str(tmp_path / "server.key")}, der


@pytest.fixture
def tls_broker(mosquitto_factory, tmp_path):
    files, der = _certs(tmp_path)
    return mosquitto_factory(tls=files), der


PRELUDE = """
import ssl
from umqtt_full import MQTTClient
CA = %r
def ctx(ca):
    x = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    x.verify_mode = ssl.CERT_REQUIRED
    x.load_verify_locations(cadata=ca)
    return x
"""


@pytest.mark.parametrize("v", [4, 5])
def test_tls_context_verified_roundtrip(tls_broker, v):
    m, der = tls_broker
    out = run_mpy(PRELUDE % der["ca"] + """
import time
got = []
c = MQTTClient("tls", "127.0.0.1", %d, ssl=ctx(CA), keepalive=2, version=%d)
c.set_callback(lambda t, m: got.append(m))
c.connect()
c.subscribe(b"tls/x", 2)
for q in (0, 1, 2):
    c.publish(b"tls/x", b"q%%d" %% q, qos=q)
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 4000:   # two keepalives, polling over TLS
    c.check_msg()
    time.sleep_ms(20)
c.publish(b"tls/x", b"after", qos=1)
c.wait_msg(3)
print("R got", sorted(got))
c.disconnect()
""" % (m.tls_port, v), heap="128K")
    assert results(out)["got"] == "[b'after', b'q0', b'q1', b'q2']"


def test_tls_port_default_and_legacy_ssl_true(tls_broker):
    m, der = tls_broker
    out = run_mpy(PRELUDE % der["ca"] + """
print("R port", MQTTClient("p", "h", ssl=True).port, MQTTClient("p", "h").port)
c = MQTTClient("legacy", "127.0.0.1", %d, ssl=True,
               ssl_params={"cert_reqs": ssl.CERT_REQUIRED, "cadata": CA})
c.connect()
c.publish(b"t", b"1", qos=1)
print("R ok", c.is_connected())
c.disconnect()
""" % m.tls_port)
    r = results(out)
    assert r == {"port": "8883 1883", "ok": "True"}


def test_tls_wrong_ca_refused(tls_broker):
    m, der = tls_broker
    out = run_mpy(PRELUDE % der["other"] + """
c = MQTTClient("bad", "127.0.0.1", %d, ssl=ctx(CA))
try:
    c.connect()
    print("R connected")
except Exception as e:
    print("R refused", type(e).__name__)
print("R sock", c.sock)
""" % m.tls_port)
    r = results(out)
    assert r["refused"] in ("OSError", "ValueError")
    assert r["sock"] == "None"


def test_tls_asyncio_client(tls_broker):
    m, der = tls_broker
    out = run_mpy(PRELUDE % der["ca"] + """
import asyncio
from umqtt_full.aio import MQTTClient as AsyncClient
got = []
async def main():
    c = AsyncClient("atls", "127.0.0.1", %d, ssl=ctx(CA), keepalive=2, version=5)
    c.set_callback(lambda t, m: got.append(m))
    await c.connect()
    await c.subscribe(b"atls/x", 2)
    for q in (0, 1, 2):
        await c.publish(b"atls/x", b"q%%d" %% q, qos=q)
    await asyncio.sleep(3)     # past a keepalive: pings over TLS from the task
    await c.publish(b"atls/x", b"late", qos=1)
    await asyncio.sleep_ms(300)
    print("R got", sorted(got), c.is_connected())
    await c.disconnect()
asyncio.run(main())
""" % m.tls_port)
    assert results(out)["got"] == "[b'late', b'q0', b'q1', b'q2'] True"
