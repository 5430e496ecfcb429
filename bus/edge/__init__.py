"""REST edge: an aiohttp app whose every route is one bus request."""
