"""ASGI server settings from the environment, shared by bin/serve and config/gunicorn.py.

Each setting below reads one variable; README.md lists them all with their defaults.
"""

from config.env import env_int, env_str

APP = "config.asgi:application"
# Uvicorn's WebSocket protocol with leaner compression: see config/ws.py.
WS_PROTOCOL = "config.ws:WebSocketProtocol"

HOST = env_str("HOST", "127.0.0.1")
PORT = env_int("PORT", 8000)
WORKERS = env_int("WEB_CONCURRENCY", 2)

# On SIGTERM the server stops accepting, gives in-flight requests this long,
# then closes WebSockets (code 1012; djust's client reconnects). systemd's
# TimeoutStopSec and Docker's stop_grace_period must be longer.
GRACEFUL_TIMEOUT = env_int("GRACEFUL_TIMEOUT", 20)

# SECURITY WARNING: X-Forwarded-For and X-Forwarded-Proto are believed only
# from these addresses (comma list, CIDR allowed); anyone else could claim to
# be any client, over HTTPS. Set them to your proxy's or load balancer's.
FORWARDED_ALLOW_IPS = env_str(
    "FORWARDED_ALLOW_IPS",
    "{{ '127.0.0.1' if cookiecutter.proxy == 'nginx' else '10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7' }}",
)

# A WebSocket peer that misses a ping is dropped, which frees the sessions of
# clients that vanished without closing (laptops closed, phones off-network).
WS_PING_INTERVAL = env_int("WS_PING_INTERVAL", 20)

# The largest WebSocket frame the server reads before closing with 1009.
# uvicorn's default, 16 MB, would let each socket buffer that much before djust
# refuses anything over its own 64 KB message limit; 1 MB leaves room for
# djust's upload chunks and bounds what a hostile client can make a worker hold.
WS_MAX_SIZE = env_int("WS_MAX_SIZE", 1024 * 1024)
