"""`python -m enroll_service`: run the enrollment gRPC service (settings from the environment)."""

import asyncio
import sys

from bws.settings import SettingsError
from enroll_service.server import main

try:
    asyncio.run(main())
except SettingsError as error:
    sys.exit(f"enroll_service: {error}")
