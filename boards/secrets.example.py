# Copy to boards/secrets.py (git-ignored); tools/deploy.py puts it on the board
# as /secrets.py, where firmware/boot.py reads it.
WIFI_SSID = "my-network"
WIFI_PASSWORD = "my-password"
WIFI_RETRIES = 3  # connect attempts per boot, 15 s each
HOSTNAME = "umqtt-broker"  # optional; None keeps the firmware default
