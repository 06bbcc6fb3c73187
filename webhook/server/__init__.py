"""The HTTPS server around the core: aiohttp app and lifecycle, TLS and certificate reload, metrics, logs."""
