"""FastAPI wiring: routes, error handlers in OpenAI's shape, the body-size guard, the viewer page.

Kept apart from :mod:`dynaprag.serve.app` (the request logic) so that the logic reads without
framework noise and FastAPI is imported only when a server is actually built.

Every route that waits for the worker waits :func:`unless_gone`: if the client disconnects
first, the wait is cancelled, and cancelling it cancels the job (the mechanism a streaming
response already uses once it has started), so a queued request of a gone client never runs
and a running one stops at its next token.
"""
# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run
# time, and ``Request`` is imported inside :func:`build`, where a string annotation would not resolve.
import asyncio
import contextlib
import json
from typing import Any, Awaitable, TypeVar

from dynaprag.serve.schemas import ChatCompletionRequest, CompletionRequest, RetrieveRequest, error_body


def _require_fastapi():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("serving needs FastAPI and uvicorn: pip install 'dynaprag[serve]'") from exc


class BodyLimit:
    """ASGI middleware: read the whole request body first, within a size and a time limit.

    A body over ``max_bytes`` gets 413, whether its length was declared or it came chunked (a
    chunked body used to surface as the framework's generic 400); a body that does not arrive
    within ``timeout`` seconds per chunk gets 408 (a client that declared a body and never sent it
    held a connection for 90 s and then got a 500). The app then reads the buffered body; after it,
    ``receive`` is the server's again, so a disconnect still reaches :func:`unless_gone`.
    """

    def __init__(self, app, max_bytes: int, timeout: float = 30.0):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send, 413, f"the request body is over the limit of {self.max_bytes} bytes",
                                      "body_too_large")
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                return await self._refuse(send, 408, f"the request body did not arrive within {self.timeout:g} s",
                                          "body_timeout")
            if message["type"] == "http.disconnect":
                return None  # the client left before its body arrived: nobody to answer
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._refuse(send, 413, f"the request body is over the limit of {self.max_bytes} bytes",
                                          "body_too_large")
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def buffered_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, buffered_receive, send)

    @staticmethod
    async def _refuse(send, status: int, message: str, code: str):
        body = json.dumps(error_body(message, code=code)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


T = TypeVar("T")


async def _until_disconnected(receive) -> None:
    """Return once the ASGI server reports ``http.disconnect`` (the client closed the connection).

    Called after the body has been read, so the next message is normally that one.
    """
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that answers at once without a message must not spin the loop


async def unless_gone(receive, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client leaves first; then cancel it and raise a 499.

    ``work`` must cancel its job when cancelled (``Service.result`` and ``Service.open_stream``
    do), so the job leaves the waiting line, or stops at the next token if it already runs.
    The 499 ("client closed request", as nginx logs it) reaches nobody; it only ends the
    handler cleanly.
    """
    from dynaprag.serve.errors import ApiError

    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_until_disconnected(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # let it cancel its job before the handler returns
    if not task.cancelled():
        return task.result()
    raise ApiError(499, "the client closed the request", type="cancelled", code="client_closed_request")


#: the fields a body must have, per route: named when the body is empty
REQUIRED_FIELDS = {"/v1/chat/completions": ("model", "messages"), "/v1/completions": ("model", "prompt"),
                   "/v1/retrieve": ("query",)}


def _describe_validation(errors: list[dict[str, Any]], path: str = "") -> tuple[str, str | None]:
    """One readable sentence from pydantic's error list, and the offending field."""
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if not loc and first.get("type") == "missing":  # no body at all: name what it must hold
        fields = REQUIRED_FIELDS.get(path, ())
        wanted = f" with the required fields {', '.join(fields)}" if fields else ""
        return f"the request body is empty: send a JSON object{wanted}", (fields[0] if fields else None)
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return f"the request body is not valid JSON ({detail})", None
    if not loc and first.get("type") in ("model_attributes_type", "dict_type"):
        return "the request body must be a JSON object", None
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{param}: {msg}" if param else msg) + more, param


def build(service, static_dir) -> Any:
    """The FastAPI application for a :class:`~dynaprag.serve.app.Service`."""
    _require_fastapi()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from dynaprag.serve.errors import ApiError

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        service.worker.start()
        try:
            yield
        finally:
            service.worker.stop()

    app = FastAPI(title="dynaprag", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible dynamic RAG with per-token traces")
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=service.limits.max_body_bytes, timeout=service.limits.body_timeout_seconds)

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return JSONResponse(error_body(exc.message, type=exc.type, param=exc.param, code=exc.code),
                            status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        message, param = _describe_validation(list(exc.errors()), request.url.path)
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), type="not_found" if exc.status_code == 404 else
                                       "invalid_request_error"), status_code=exc.status_code)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_id, "method": service.default_method,
                "queue": service.worker.stats()}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return service.models()

    @app.get("/v1/methods")
    def methods() -> dict[str, Any]:
        from dynaprag.pipeline import method_names

        return {"object": "list", "default": service.default_method, "data": method_names()}

    @app.post("/v1/retrieve")
    async def retrieve(req: RetrieveRequest, request: Request) -> dict[str, Any]:
        return await unless_gone(request.receive, service.retrieve(req))

    async def complete(req, request: Request, chat: bool):
        if req.stream:
            lines = await unless_gone(request.receive, service.open_stream(req, chat))
            return StreamingResponse(lines, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        checked = service.check(req)
        job = service.answer_job(checked)
        answer = await unless_gone(request.receive, service.result(job))
        shape = service.chat_body if chat else service.completion_body
        return JSONResponse(shape(answer, req, checked.method, checked.question, checked.budget))

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        return await complete(req, request, chat=True)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        return await complete(req, request, chat=False)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(str(static_dir / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")
    return app
