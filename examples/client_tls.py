# TLS, as with recent umqtt.simple (ssl=SSLContext); only the import differs.
import ssl
from umqtt_full import MQTTClient

# Broker certificate authority in DER form (e.g. ca.der next to this file).
CA_FILE = "ca.der"


def main(server="localhost", ca_file=CA_FILE):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    with open(ca_file, "rb") as f:
        ctx.load_verify_locations(cadata=f.read())
    c = MQTTClient("umqtt_tls_client", server, ssl=ctx)
    c.connect()
    c.publish(b"foo_topic", b"hello over TLS")
    c.disconnect()


if __name__ == "__main__":
    main()
