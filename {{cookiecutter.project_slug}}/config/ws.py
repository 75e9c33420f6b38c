"""The WebSocket protocol uvicorn runs for bin/serve and config/gunicorn.py.

Uvicorn's own protocol (websockets' sans-I/O implementation) with leaner
permessage-deflate, which every browser asks for:

- No context takeover. By default each connection keeps a zlib compressor and
  decompressor for its whole life, about 45 KB even while it sits idle, which
  nearly doubles what an idle LiveView session costs a worker. Here every
  message is compressed on its own and the zlib state is freed once the message
  is sent or read: idle sessions hold none.
- Small messages go out uncompressed (RFC 7692 allows it per message). A patch
  is a few hundred bytes: deflating it without history saves a few dozen bytes,
  less than the TLS and TCP framing around it, and costs a fresh compressor
  (about 33 KB allocated, then freed) on every event.

Larger messages, such as the HTML of a mount or a long list's patch, are still
compressed. BENCHMARKS.md in the template has the measured memory per session.
"""

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

# Messages shorter than this many bytes are sent as they are. 1 KB is also the
# default of the `ws` package, Node's most used WebSocket server.
COMPRESS_MIN_BYTES = 1024


class SmallMessagesPlain(PerMessageDeflate):
    """permessage-deflate that sends messages under COMPRESS_MIN_BYTES uncompressed."""

    def encode(self, frame: Frame) -> Frame:
        # Only a whole message in one frame can skip compression: the frames of
        # a fragmented message must all be treated alike.
        whole_message = frame.fin and frame.opcode in (Opcode.TEXT, Opcode.BINARY)
        if whole_message and len(frame.data) < COMPRESS_MIN_BYTES:
            return frame  # RSV1 stays clear: the client reads it as is.
        return super().encode(frame)


class DeflateFactory(ServerPerMessageDeflateFactory):
    """Answers a client's permessage-deflate offer with the terms above."""

    def __init__(self):
        super().__init__(
            # Neither side keeps zlib state between messages.
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            # uvicorn's choices: a 4 KB window and a small hash table are plenty
            # for messages of a few kilobytes.
            server_max_window_bits=12,
            client_max_window_bits=12,
            compress_settings={"memLevel": 5},
        )

    def process_request_params(self, params, accepted_extensions):
        response, agreed = super().process_request_params(params, accepted_extensions)
        lean = SmallMessagesPlain(
            agreed.remote_no_context_takeover,
            agreed.local_no_context_takeover,
            agreed.remote_max_window_bits,
            agreed.local_max_window_bits,
            self.compress_settings,
        )
        return response, lean


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """Uvicorn's WebSocket protocol, negotiating the leaner deflate above."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            # Nothing has been read yet: swap the connection state machine
            # uvicorn just built for one with our extension terms.
            self.conn = ServerProtocol(
                extensions=[DeflateFactory()],
                max_size=self.config.ws_max_size,
                logger=self.conn.logger,
            )
