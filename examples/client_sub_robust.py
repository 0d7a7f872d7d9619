# umqtt.robust's example_sub_robust.py with only the import changed.
import time
from umqtt_full.robust import MQTTClient

# Publish test messages e.g. with:
# mosquitto_pub -t foo_topic -m hello


def sub_cb(topic, msg):
    print((topic, msg))


def main(server="localhost"):
    c = MQTTClient("umqtt_client", server)
    # Print diagnostic messages when retries/reconnects happens
    c.DEBUG = True
    c.set_callback(sub_cb)
    # Connect to server, requesting not to clean session for this
    # client. If there was no existing session (False return value
    # from connect() method), we perform the initial setup of client
    # session - subscribe to needed topics. Afterwards, these
    # subscriptions will be stored server-side, and will be persistent,
    # (as we use clean_session=False).
    if not c.connect(clean_session=False):
        print("New session being set up")
        c.subscribe(b"foo_topic")

    while 1:
        c.wait_msg()

    c.disconnect()


if __name__ == "__main__":
    main()
