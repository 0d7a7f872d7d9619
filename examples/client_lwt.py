# Last will, umqtt.simple style (only the import differs from umqtt code):
# the broker publishes b"offline" on status_topic if this client vanishes
# without disconnect().
import time
from umqtt_full import MQTTClient

# Watch with:
# mosquitto_sub -t status_topic -v


def main(server="localhost"):
    c = MQTTClient("umqtt_lwt_client", server, keepalive=5)
    c.set_last_will(b"status_topic", b"offline", retain=False, qos=1)
    c.connect()
    c.publish(b"status_topic", b"online")
    while True:
        # Keep the connection alive until the process is killed.
        c.check_msg()
        time.sleep(1)
        c.ping()


if __name__ == "__main__":
    main()
