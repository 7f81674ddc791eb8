"""uvicorn's HTTP/1.1 protocol with a bound on the time a request's head may take.

The body timeout (:class:`tracemark.service.app.ServiceSettings.body_timeout`) is ASGI
middleware, and ASGI only sees a request once its head -- request line and headers, up to
the blank line -- is complete. uvicorn 0.54 has no bound on that part: its keep-alive timer
is cancelled by the first byte of a new request, so a client that sends
``POST /x HTTP/1.1\\r\\nHost: x\\r\\n`` and stops holds the connection (and its memory) for
ever. :func:`protocol_class` returns a subclass of the protocol uvicorn's ``http="auto"``
would pick (httptools when installed, else h11) that starts a timer when a connection opens
and again when a response completes (keep-alive), and cancels it when a request head is
parsed. When it fires and part of a head has arrived, the client is answered ``408``
(``{"error": {"type": "RequestTimeout", ...}}``, ``Connection: close``) and the connection
is closed; an idle connection is just closed. The timer counts from the connection (or the
previous response), not from the last byte: a head trickled a byte at a time is bounded too
(the "slowloris" pattern). Same idea as nginx's ``client_header_timeout``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

__all__ = ["protocol_class"]


def _timeout_answer(seconds: float) -> bytes:
    body = json.dumps({"error": {"type": "RequestTimeout", "message":
                                 f"the request head did not arrive within {seconds:g} s"}}
                      ).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


class _HeadTimeout:
    """Mixin over a uvicorn HTTP protocol; ``header_timeout`` (seconds) is set by
    :func:`protocol_class`. Subclasses say when a head is complete (``_head_parsed``)."""

    header_timeout: float = 60.0
    transport: Any
    loop: asyncio.AbstractEventLoop

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes: bool = False

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_bytes = False
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes:
            self.transport.write(_timeout_answer(self.header_timeout))
        self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._head_timer is not None and data:
            self._head_bytes = True
        super().data_received(data)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        # armed first: a pipelined request parsed inside super() cancels it again
        self._arm_head_timer()
        super().on_response_complete()  # type: ignore[misc]
        if self.transport.is_closing():
            self._cancel_head_timer()

    def _head_parsed(self) -> None:
        self._cancel_head_timer()


def protocol_class(header_timeout: float) -> type[asyncio.Protocol]:
    """The protocol class to pass as uvicorn's ``http=`` (``uvicorn.run(app, http=...)``).

    ``header_timeout``: seconds (> 0) from a connection's opening, or from the end of its
    previous response, within which a complete request head must arrive; else 408 and close
    (see the module docstring). Raises ``ValueError`` for a non-positive timeout.
    """
    if not header_timeout > 0:
        raise ValueError(f"header_timeout must be > 0 seconds, got {header_timeout!r}")
    try:
        import httptools  # noqa: F401
    except ImportError:
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol

        class H11HeadTimeout(_HeadTimeout, H11Protocol):
            def handle_events(self) -> None:
                super().handle_events()
                # IDLE: still reading a head (or none begun); past it once h11 parsed one
                if self._head_timer is not None and self.conn.their_state is not h11.IDLE:
                    self._head_parsed()

        base: type[asyncio.Protocol] = H11HeadTimeout
    else:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class HttpToolsHeadTimeout(_HeadTimeout, HttpToolsProtocol):
            def on_headers_complete(self) -> None:
                self._head_parsed()
                super().on_headers_complete()

        base = HttpToolsHeadTimeout
    return type(base.__name__, (base,), {"header_timeout": float(header_timeout)})
