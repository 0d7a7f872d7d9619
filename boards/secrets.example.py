# Copy to boards/secrets.py (git-ignored); `make mpy`/`make deploy` put it on
# the board as /secrets.py, where firmware/boot.py reads it.
WIFI_MODE = "sta"  # "sta": join WIFI_SSID; "ap": be an access point;
#                    "sta+ap": join WIFI_SSID, else start the access point
WIFI_SSID = "my-network"
WIFI_PASSWORD = "my-password"
WIFI_RETRIES = 3  # connect attempts per boot, 15 s each
AP_SSID = "umqtt-board"  # the board's own network ("ap", "sta+ap")
AP_PASSWORD = "change-me-please"  # 8 or more characters; "" for an open network
HOSTNAME = "umqtt-broker"  # optional; None keeps the firmware default
