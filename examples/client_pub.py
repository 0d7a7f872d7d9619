# umqtt.simple's example_pub.py with only the import changed.
from umqtt_full import MQTTClient

# Test reception e.g. with:
# mosquitto_sub -t foo_topic


def main(server="localhost"):
    c = MQTTClient("umqtt_client", server)
    c.connect()
    c.publish(b"foo_topic", b"hello")
    c.disconnect()


if __name__ == "__main__":
    main()
