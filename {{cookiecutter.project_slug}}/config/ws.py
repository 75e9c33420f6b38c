"""The WebSocket protocol uvicorn runs for bin/serve and config/gunicorn.py.

Uvicorn's own protocol (websockets' sans-I/O implementation), changed in one
way: permessage-deflate without context takeover.

Browsers offer permessage-deflate on every WebSocket. With context takeover,
uvicorn's default, each connection keeps a zlib compressor and decompressor for
its whole life, about 50 KB even while it sits idle, which nearly doubles what
an idle LiveView session costs a worker. Without it, every message is
compressed on its own and the zlib state is freed once the message is sent or
read, so idle sessions hold none. The price is a weaker ratio on small patches
(no shared history between messages) and a fresh compressor per message, a few
microseconds. The template's BENCHMARKS.md has the measured memory per session.
"""

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol


def deflate():
    """The permessage-deflate terms this server answers a client's offer with."""
    return ServerPerMessageDeflateFactory(
        # Neither side keeps zlib state between messages.
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        # uvicorn's choices: a 4 KB window and a small hash table are plenty
        # for patches of a few hundred bytes.
        server_max_window_bits=12,
        client_max_window_bits=12,
        compress_settings={"memLevel": 5},
    )


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """Uvicorn's WebSocket protocol, negotiating deflate without context takeover."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            # Nothing has been read yet: swap the connection state machine
            # uvicorn just built for one with our extension terms.
            self.conn = ServerProtocol(
                extensions=[deflate()],
                max_size=self.config.ws_max_size,
                logger=self.conn.logger,
            )
