"""A real uvicorn server in a thread, for the service tests that need real sockets."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def uvicorn_in_thread(app: Any, **config: Any) -> Iterator[int]:
    """Serve ``app`` on 127.0.0.1 (a free port) until the block ends; yields the port.
    ``config`` goes to ``uvicorn.Config`` (e.g. ``http=...``, ``lifespan="on"``)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
