"""`python -m gateway`: run the HTTP gateway (settings from the environment)."""

import sys

from bws.settings import SettingsError
from gateway.app import main

try:
    main()
except SettingsError as error:
    sys.exit(f"gateway: {error}")
