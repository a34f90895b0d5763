"""`python -m liveness_service`: run the liveness gRPC service (settings from the environment)."""

import asyncio
import sys

from bws.settings import SettingsError
from liveness_service.server import main

try:
    asyncio.run(main())
except SettingsError as error:
    sys.exit(f"liveness_service: {error}")
