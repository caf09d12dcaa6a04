"""Staff web console and JSON API (aiohttp + Jinja2)."""
