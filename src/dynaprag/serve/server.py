"""Run the app under uvicorn in a background thread: for notebooks, scripts and tests.

The socket is bound before uvicorn starts (port 0 picks a free port), so there is no race
between choosing a port and listening on it, and ``url`` is known as soon as the context
is entered.

>>> from dynaprag.serve.server import ServerThread                       # doctest: +SKIP
>>> with ServerThread(app) as server:                                    # doctest: +SKIP
...     print(server.url)                                                # doctest: +SKIP
http://127.0.0.1:41237
"""
from __future__ import annotations

import socket
import threading
import time


class ServerThread:
    """``with ServerThread(app, port=0) as s: ... s.url`` — serves until the block ends."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 start_timeout: float = 60.0):
        import uvicorn

        self.app = app
        self.host = host
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name=f"uvicorn-{self.port}", daemon=True)
        self.start_timeout = start_timeout

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.socket.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
