"""The admission webhook: an aiohttp HTTPS server with /mutate and /validate."""
