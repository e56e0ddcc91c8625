"""The HTTP app: OpenAI-compatible completions, search, health, and the trace viewer page.

``create_app(pipeline)`` wraps one loaded :class:`~dynaprag.pipeline.Pipeline` (the model is
loaded once, by the caller). Every model call goes through one :class:`Worker` thread with a
bounded queue; a full queue answers 503 with ``Retry-After``. Answer requests with the same
method, knobs and token budget that wait together are decoded together, up to ``batch_size``
at once, through :meth:`~dynaprag.pipeline.Pipeline.answer_many` (each answer is the one the
request would get alone; each request streams, fails or is cancelled on its own). A request
that arrives while a batch of its key runs joins it as soon as a question finishes and frees
a slot (continuous batching: :meth:`~dynaprag.serve.worker.Worker.take_waiting`).

Errors are answered in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``):
400 for malformed JSON, wrong types, unknown methods or knobs, 404 for an unknown model id,
413 for a body or question over the limits, 503 when busy, 500 for a failure inside the
pipeline (the server keeps serving in every case).

>>> from dynaprag.pipeline import Pipeline, PipelineConfig                # doctest: +SKIP
>>> app = create_app(Pipeline.from_config(PipelineConfig()))             # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)          # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, AsyncIterator, Callable, Iterator

from dynaprag.serve.schemas import (AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest,
                                    Completion, CompletionChoice, CompletionRequest, ModelCard, ModelList,
                                    RetrieveRequest, Usage, error_body, new_id, now)
from dynaprag.pipeline import method_names, stop_strings
from dynaprag.serve.budget import MemoryModel, cache_copies, request_tokens
from dynaprag.serve.errors import ApiError
from dynaprag.serve.stream import CommitStream
from dynaprag.serve.worker import Cancelled, OverBudget, QueueFull, Worker

_DONE = object()


@dataclass
class Limits:
    """Input bounds that keep one request from exhausting memory, the model's context or the worker.

    ``max_request_tokens``: the longest prompt + answer a request may need (prompt prefix,
    question and ``max_tokens``; refused with 413 before it queues). ``memory_budget_mb``: the
    working memory the requests decoding at once may hold, beyond the loaded model and index
    (:mod:`dynaprag.serve.budget` estimates each request; one that alone does not fit is refused
    with 413, and one that does not fit beside a running batch waits). ``body_timeout_seconds``:
    how long a declared body may take to arrive (then 408). ``max_queries`` and ``max_k`` bound
    ``/v1/retrieve``. ``encode_on_demand``: PRAG may train missing adapters while a request
    waits (off: a passage without an adapter is answered in context; the operator's choice,
    ``dynaprag serve --encode-on-demand``, never a request's).
    """

    max_body_bytes: int = 1 << 20
    max_question_chars: int = 4000
    max_tokens: int = 512
    max_request_tokens: int = 4096
    memory_budget_mb: int = 8192
    body_timeout_seconds: float = 30.0
    max_queries: int = 32
    max_k: int = 20
    encode_on_demand: bool = False


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions from the pipeline that mean "bad request" (a 400), not a server fault.

    ``ConfigError`` (an unknown or mistyped knob) and ``UnknownNameError`` come from config
    resolution; the pipeline raises ``ValueError`` for inputs it cannot answer (an empty
    question, a method the model cannot run).
    """
    from dynaprag.config import ConfigError
    from dynaprag.registry import UnknownNameError

    return (ConfigError, UnknownNameError, ValueError)


@dataclass
class AnswerRequest:
    """What a batched answer job carries: the question and where its events go."""

    question: str
    sink: Callable[[Any], None] | None = None


def batch_key(method: str, options: dict[str, Any], budget: int) -> tuple[str, str, int]:
    """Requests with equal keys may be decoded in one batch (same method, knobs and budget)."""
    return method, json.dumps(options, sort_keys=True), budget


class Service:
    """The request logic behind the routes: validation, queueing, answer -> OpenAI body."""

    def __init__(self, pipeline, worker: Worker, limits: Limits, model_id: str):
        self.pipeline = pipeline
        self.worker = worker
        self.limits = limits
        self.model_id = model_id
        self.default_method = pipeline.config.method
        self.memory = MemoryModel.of(pipeline.lm)
        worker.run_batch = self.run_batch

    # --- validation ---------------------------------------------------------------------
    def check(self, req: ChatCompletionRequest | CompletionRequest) -> "Checked":
        """Validate a completion request before it queues: every refusal here is a 4xx naming the field."""
        if req.model != self.model_id:
            raise ApiError(404, f"model {req.model!r} does not exist; this server serves {self.model_id!r} "
                           "(see GET /v1/models)", param="model", code="model_not_found")
        param = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
        question = req.question().strip()
        check_text(question, param)
        if len(question) > self.limits.max_question_chars:
            raise ApiError(413, f"the question has {len(question)} characters; the limit is "
                           f"{self.limits.max_question_chars}", param="messages", code="input_too_long")
        budget = req.token_budget() or min(self.pipeline.config.max_new_tokens, self.limits.max_tokens)
        if budget > self.limits.max_tokens:
            raise ApiError(400, f"max_tokens={budget} is over this server's limit of {self.limits.max_tokens}",
                           param="max_tokens")
        method = req.dynaprag.method or self.default_method
        names = method_names()
        if method not in names:
            raise ApiError(400, f"unknown method {method!r}; choose one of: {', '.join(names)}",
                           param="dynaprag.method", code="unknown_method")
        try:
            resolved = self.pipeline.method_for_request(method, req.dynaprag.options)
        except _user_error_types() as exc:
            raise ApiError(400, str(exc), param="dynaprag.options", code="invalid_option") from None
        ready = getattr(resolved.injector, "check_ready", None)
        if ready is not None:
            try:
                ready(self.pipeline.lm)
            except (FileNotFoundError, ValueError) as exc:
                raise ApiError(400, f"method {method!r} cannot answer on this server: {exc}",
                               param="dynaprag.method", code="method_unavailable") from None
        sampling = [name for name, value, greedy in (("temperature", req.temperature, 0.0), ("top_p", req.top_p, 1.0),
                                                     ("seed", req.seed, None)) if value not in (None, greedy)]
        if sampling:
            raise ApiError(400, f"{sampling[0]} is not supported: every method decodes greedily, as its reference "
                           "code does (SeaKR's sampling seed is the server's `seed` setting)", param=sampling[0])
        if req.stop:
            raise ApiError(400, "stop strings are not supported: every method stops after its answer "
                           "sentence ('So the answer is ...') or at max_tokens", param="stop")
        options = dict(req.dynaprag.options)
        if not self.limits.encode_on_demand and getattr(resolved.injector, "on_missing", None) == "encode":
            options["injector.on_missing"] = "context"  # the operator's --encode-on-demand, never a request's
        return Checked(question, method, options, budget, self.cost(question, resolved, budget, param))

    def cost(self, question: str, resolved, budget: int, param: str) -> int:
        """The request's estimated working memory; 413 when its tokens or memory are over the limits."""
        builder = self.pipeline.builder_for(resolved)
        prefix = len(getattr(builder, "prefix_ids", ()))
        asked = len(self.pipeline.generator.encode(question))
        tokens = prefix + asked + budget
        if tokens > self.limits.max_request_tokens:
            raise ApiError(413, f"the request needs {tokens} tokens (prompt {prefix} + question {asked} + max_tokens "
                           f"{budget}); this server's limit is {self.limits.max_request_tokens} tokens per request "
                           "(--max-request-tokens)", param=param, code="too_many_tokens")
        cost = self.memory.request_bytes(request_tokens(prefix, asked, self.pipeline.config.k, budget),
                                         cache_copies(resolved))
        if cost > self.limits.memory_budget_mb << 20:
            raise ApiError(413, str(OverBudget(cost, self.limits.memory_budget_mb << 20)), param=param,
                           code="over_memory_budget")
        return cost

    # --- running ------------------------------------------------------------------------
    def submit(self, fn: Callable) -> Any:
        try:
            return self.worker.submit(fn)
        except QueueFull as exc:
            raise ApiError(503, str(exc), type="server_busy", code="queue_full",
                           headers={"Retry-After": str(exc.retry_after)}) from None

    def answer_job(self, checked: "Checked", sink: Callable[[Any], None] | None = None):
        """Queue an answer; it runs in a batch with the waiting requests of the same key."""
        try:
            return self.worker.submit_batched(batch_key(checked.method, checked.options, checked.budget),
                                              AnswerRequest(checked.question, sink), cost=checked.cost)
        except OverBudget as exc:
            raise ApiError(413, str(exc), code="over_memory_budget") from None
        except QueueFull as exc:
            raise ApiError(503, str(exc), type="server_busy", code="queue_full",
                           headers={"Retry-After": str(exc.retry_after)}) from None

    def run_batch(self, key: tuple[str, str, int], jobs: list) -> Iterator[tuple[int, Any]]:
        """Answer ``jobs`` (one key) together on the worker thread: ``(index, Answer or exception)``.

        Whenever a slot is free, waiting jobs of the same key join (:meth:`Worker.take_waiting`
        appends them to ``jobs``; their questions join the running
        :class:`~dynaprag.dynamic.batch.BatchLoop`). A job's events go to its own sink; a job
        whose client left raises :class:`Cancelled` at its next token, which ends that
        question only. Each sink gets ``_DONE`` when its question ends, however it ends.
        """
        method, options, budget = key
        requests: list[AnswerRequest] = [job.payload for job in jobs]
        finished: set[int] = set()
        refused: list[int] = []  # joined jobs with an empty question, answered at the next yield

        def done(index: int) -> None:
            finished.add(index)
            if requests[index].sink is not None:
                requests[index].sink(_DONE)

        def on_event(index: int, event: dict) -> None:
            jobs[index].check()
            if requests[index].sink is not None:
                requests[index].sink(event)

        def more(free: int) -> list[str]:
            """The questions of waiting jobs that join now; ``live`` maps their batch indices to jobs."""
            questions = []
            for job in self.worker.take_waiting(key, free):
                requests.append(job.payload)
                index = len(requests) - 1
                if jobs[index] is not job:
                    raise RuntimeError("a joined job is not where the worker's index says")
                if job.payload.question.strip():
                    live.append(index)
                    questions.append(job.payload.question)
                else:
                    refused.append(index)
            return questions

        def empties() -> Iterator[tuple[int, Any]]:
            while refused:
                index = refused.pop()
                done(index)
                yield index, ValueError("question is empty")

        def interrupt() -> None:
            """Before every forward pass: stop when no client of this batch is still waiting."""
            if all(job.cancelled.is_set() for i, job in enumerate(jobs) if i not in finished):
                raise Cancelled("every client of this batch went away")

        refused += [i for i, r in enumerate(requests) if not r.question.strip()]
        yield from empties()  # answered alone: answer_many refuses a batch holding an empty question
        live = [i for i in range(len(jobs)) if i not in finished]
        generator = self.pipeline.generator
        generator.interrupt = interrupt
        try:
            if live:
                answers = self.pipeline.answer_many([requests[i].question for i in live],
                                                    batch_size=self.worker.batch_size, method=method,
                                                    options=json.loads(options), max_new_tokens=budget,
                                                    on_event=lambda i, e: on_event(live[i], e), more=more)
                for i, result in answers:
                    done(live[i])
                    yield live[i], result
                    yield from empties()
                yield from empties()
        finally:
            generator.interrupt = None
            for index in range(len(jobs)):
                if index not in finished:
                    done(index)

    async def result(self, job) -> Any:
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            job.cancel()
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.as_api_error(exc) from exc

    @staticmethod
    def as_api_error(exc: BaseException) -> ApiError:
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, _user_error_types()):
            return ApiError(400, str(exc), code="invalid_options")
        if isinstance(exc, Cancelled):
            return ApiError(499, "the request was cancelled", type="cancelled")
        if isinstance(exc, OverBudget):
            return ApiError(413, str(exc), code="over_memory_budget")
        return ApiError(500, f"the pipeline failed: {type(exc).__name__}: {exc}", type="server_error")

    # --- shaping ------------------------------------------------------------------------
    def extension(self, answer, method: str, question: str, include_tokens: bool,
                  notes: list[str] = ()) -> dict[str, Any]:
        trace = answer.trace.to_dict()
        trace["notes"] = list(trace.get("notes", [])) + list(notes)
        if not include_tokens:
            trace["tokens"] = []
        return {"method": method, "question": question, "short": answer.short, "trace": trace}

    def usage(self, answer) -> Usage:
        completion = len(answer.trace.tokens)
        return Usage(prompt_tokens=answer.trace.prompt_tokens, completion_tokens=completion,
                     total_tokens=answer.trace.prompt_tokens + completion)

    @staticmethod
    def finish_reason(answer, budget: int) -> str:
        return "length" if len(answer.trace.tokens) >= budget else "stop"

    def chat_body(self, answer, req, method, question, budget) -> dict[str, Any]:
        return ChatCompletion(
            id=new_id("chatcmpl"), created=now(), model=self.model_id,
            choices=[ChatChoice(message=AssistantMessage(content=answer.text),
                                finish_reason=self.finish_reason(answer, budget))],
            usage=self.usage(answer),
            dynaprag=self.extension(answer, method, question, req.dynaprag.include_tokens),
        ).model_dump()

    def completion_body(self, answer, req, method, question, budget) -> dict[str, Any]:
        return Completion(
            id=new_id("cmpl"), created=now(), model=self.model_id,
            choices=[CompletionChoice(text=answer.text, finish_reason=self.finish_reason(answer, budget))],
            usage=self.usage(answer),
            dynaprag=self.extension(answer, method, question, req.dynaprag.include_tokens),
        ).model_dump()

    # --- streaming ----------------------------------------------------------------------
    async def open_stream(self, req, chat: bool) -> AsyncIterator[str]:
        """Queue the job and wait for its first event, so errors before decoding are plain 4xx.

        Returns an async iterator of SSE lines; the job is cancelled if the client leaves.
        """
        checked = self.check(req)
        question, method, budget = checked.question, checked.method, checked.budget
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = self.answer_job(checked, sink=lambda e: loop.call_soon_threadsafe(events.put_nowait, e))
        try:
            first = await events.get()
        except asyncio.CancelledError:
            job.cancel()
            raise
        if first is _DONE:  # finished or failed before any event: a failure is still a plain 4xx/5xx
            await self.result(job)
        return self._sse(job, first, events, req, chat, question, method, budget)

    async def _sse(self, job, first, events, req, chat, question, method, budget) -> AsyncIterator[str]:
        cid, created = new_id("chatcmpl" if chat else "cmpl"), now()
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None = None, extra: dict | None = None,
                  role: bool = False) -> str:
            if chat:
                delta: dict[str, Any] = {}
                if role:
                    delta["role"] = "assistant"
                if text is not None:
                    delta["content"] = text
                choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            body: dict[str, Any] = {"id": cid, "object": kind, "created": created, "model": self.model_id,
                                    "choices": [choice]}
            if extra is not None:
                body["dynaprag"] = extra
            return f"data: {json.dumps(body)}\n\n"

        commit = CommitStream(may_roll_back=self.pipeline.method(method, dict(req.dynaprag.options)).rolls_back,
                              stops=stop_strings())
        try:
            if chat:
                yield chunk("", role=True)
            event = first
            while event is not _DONE:
                delta = commit.feed(event)
                if delta:
                    yield chunk(delta)
                if event.get("type") == "retrieval":
                    yield chunk(None if chat else "", extra={"event": event})
                event = await events.get()
            try:
                answer = await asyncio.wrap_future(job.future)
            except Exception as exc:  # noqa: BLE001 - reported in-band: the headers are sent
                err = self.as_api_error(exc)
                yield f"data: {json.dumps(error_body(err.message, type=err.type, code=err.code))}\n\n"
                return
            rest = commit.finish(answer.text)
            if rest:
                yield chunk(rest)
            ext = self.extension(answer, method, question, req.dynaprag.include_tokens, commit.notes)
            yield chunk(None if chat else "", finish=self.finish_reason(answer, budget), extra=ext)
            if req.stream_options is not None and req.stream_options.include_usage:
                usage = {"id": cid, "object": kind, "created": created, "model": self.model_id,
                         "choices": [], "usage": self.usage(answer).model_dump()}
                yield f"data: {json.dumps(usage)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()

    # --- search -------------------------------------------------------------------------
    async def retrieve(self, req: RetrieveRequest) -> dict[str, Any]:
        try:
            queries = req.queries()
        except ValueError as exc:
            raise ApiError(400, str(exc), param="query") from None
        if len(queries) > self.limits.max_queries:
            raise ApiError(413, f"{len(queries)} queries in one request; the limit is {self.limits.max_queries}",
                           param="query", code="too_many_queries")
        if req.k > self.limits.max_k:
            raise ApiError(400, f"k={req.k} is over this server's limit of {self.limits.max_k}", param="k")
        for query in queries:
            check_text(query, "query")
        if any(len(q) > self.limits.max_question_chars for q in queries):
            raise ApiError(413, f"a query is over {self.limits.max_question_chars} characters", param="query")
        retriever = self.pipeline.retriever
        job = self.submit(lambda _job: retriever.search(queries, req.k))
        hits = await self.result(job)
        return {"object": "list", "data": [
            {"query": q, "hits": [{"id": h.id, "title": h.title, "text": h.text, "score": float(h.score)}
                                  for h in row]} for q, row in zip(queries, hits)]}

    def models(self) -> dict[str, Any]:
        return ModelList(data=[ModelCard(id=self.model_id, created=now())]).model_dump()


@dataclass
class Checked:
    """A validated completion request: what the worker runs, and its estimated memory (bytes)."""

    question: str
    method: str
    options: dict[str, Any]
    budget: int
    cost: int


def check_text(text: str, param: str) -> None:
    """400 for text that is not valid Unicode: JSON's ``"\\ud800"`` escape decodes to a lone surrogate,
    which no tokenizer or encoder accepts (it failed deep inside with a 500)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, f"{param}: the text holds a lone UTF-16 surrogate ({text[exc.start]!a} at character "
                       f"{exc.start}); send valid Unicode", param=param, code="invalid_unicode") from None


def _static_dir():
    return resources.files("dynaprag") / "serve" / "static"


def create_app(pipeline, *, max_queue: int = 8, limits: Limits | None = None, model_id: str | None = None,
               batch_size: int = 8):
    """The FastAPI app serving ``pipeline``; its worker thread starts and stops with the app.

    ``batch_size`` bounds how many waiting answer requests of one method, knobs and budget are
    decoded together (1: one at a time); ``max_queue`` how many requests may wait.
    """
    from dynaprag.serve.routes import build

    limits = limits or Limits()
    worker = Worker(max_queue=max_queue, batch_size=batch_size, memory_budget=limits.memory_budget_mb << 20)
    service = Service(pipeline, worker, limits, model_id or pipeline.config.model)
    return build(service, static_dir=_static_dir())
