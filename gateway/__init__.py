"""The HTTP gateway: the BWS Web API over aiohttp, calling the liveness and enrollment services."""
