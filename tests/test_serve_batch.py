"""Server batching on the real server and model: concurrent requests of one method, knobs and budget
are decoded together through one BatchLoop, a request that arrives while a batch of its key runs
joins it, and each answer is the one the request gets alone.
"""
from __future__ import annotations

import concurrent.futures
import json

import pytest

pytestmark = pytest.mark.slow

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def pipeline(lm):
    from dynaprag.pipeline import Pipeline, PipelineConfig

    return Pipeline.from_config(PipelineConfig(dtype="float32", max_new_tokens=32, max_retrievals=1), lm=lm)


def demo_questions() -> list[str]:
    from dynaprag.retrieval import demo_questions_path

    with open(demo_questions_path(), encoding="utf-8") as handle:
        return [json.loads(line)["question"] for line in handle if line.strip()]


def send(url: str, body: dict) -> dict:
    """POST ``body`` to ``/v1/completions`` (streamed if it says so): status, text and the extension."""
    with httpx.Client(timeout=600) as http:
        if not body.get("stream"):
            resp = http.post(f"{url}/v1/completions", json=body)
            if resp.status_code != 200:
                return {"status": resp.status_code, "text": resp.text, "ext": None}
            return {"status": 200, "text": resp.json()["choices"][0]["text"], "ext": resp.json().get("dynaprag")}
        pieces, ext = [], None
        with http.stream("POST", f"{url}/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                return {"status": resp.status_code, "text": resp.read().decode(), "ext": None}
            for line in resp.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[6:])
                    assert "error" not in chunk, chunk
                    pieces.append(chunk["choices"][0]["text"])
                    ext = chunk.get("dynaprag", ext)
        return {"status": 200, "text": "".join(pieces), "ext": ext}


def test_twenty_concurrent_requests_are_batched_and_equal_batch_1(pipeline):
    """20 simultaneous requests (12 distinct questions, every other one streamed), batch 8: none is
    refused, they run in a few batches, and each text, short answer and retrieval equals
    ``pipeline.answer`` of that question alone (float32)."""
    from dynaprag.serve.app import create_app
    from dynaprag.serve.server import ServerThread

    questions = demo_questions()
    asked = [questions[i % len(questions)] for i in range(20)]
    dynaprag = {"method": "sr-rag"}
    alone = {q: pipeline.answer(q, method="sr-rag", max_new_tokens=MAX_TOKENS) for q in questions}

    with ServerThread(create_app(pipeline, batch_size=8, max_queue=20)) as server:
        model = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]

        def ask(i: int) -> dict:
            return send(server.url, {"model": model, "prompt": asked[i], "max_tokens": MAX_TOKENS,
                                     "dynaprag": dynaprag, "stream": i % 2 == 1})

        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(ask, range(20)))
        queue = httpx.get(f"{server.url}/health").json()["queue"]

    assert [r["status"] for r in results] == [200] * 20, [r["text"][:200] for r in results if r["status"] != 200]
    for question, result in zip(asked, results):
        expected = alone[question]
        assert result["text"] == expected.text, question
        assert result["ext"]["short"] == expected.short
        retrievals = result["ext"]["trace"]["retrievals"]
        assert [r["hit_ids"] for r in retrievals] == [r.hit_ids for r in expected.trace.retrievals]
    assert queue["completed"] == 20 and queue["failed"] == 0 and queue["refused"] == 0
    assert queue["largest_batch"] > 1 and queue["batches"] < 20, queue


def test_a_client_leaving_a_batch_stops_only_its_own_question(pipeline, monkeypatch):
    """Two requests of one key wait while the worker is held, then decode as one batch; the first
    one's client leaves at its first token: it is cancelled, the other gets its batch-1 answer."""
    import functools
    import socket
    import threading
    import time

    from dynaprag.serve.app import create_app
    from dynaprag.serve.server import ServerThread

    leaving, staying = "Who directed Jaws? (asked by a client that leaves)", "Who directed Jaws?"
    started, left, outcome = threading.Event(), threading.Event(), {}
    real = pipeline.answer_many

    @functools.wraps(real)
    def answer_many(questions, *args, on_event, **kwargs):
        def at_token(index: int, event: dict) -> None:
            if questions[index] == leaving and not started.is_set():
                started.set()
                left.wait(120)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # until the server has noticed the client left
                    on_event(index, event)
                    time.sleep(0.01)
            on_event(index, event)
        for index, result in real(questions, *args, on_event=at_token, **kwargs):
            outcome[questions[index]] = type(result).__name__ if isinstance(result, BaseException) else "answered"
            yield index, result

    expected = pipeline.answer(staying, method="wo-rag", max_new_tokens=MAX_TOKENS)
    monkeypatch.setattr(pipeline, "answer_many", answer_many)
    with ServerThread(create_app(pipeline, batch_size=8, max_queue=8)) as server:
        worker = server.app.state.service.worker
        model = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
        body = {"model": model, "max_tokens": MAX_TOKENS, "dynaprag": {"method": "wo-rag"}}
        gate = threading.Event()
        holder = worker.submit(lambda _job: gate.wait(300))
        try:
            payload = json.dumps({**body, "prompt": leaving}).encode()
            sock = socket.create_connection((server.host, server.port))
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                other = pool.submit(httpx.post, f"{server.url}/v1/completions", json={**body, "prompt": staying},
                                    timeout=300)
                deadline = time.monotonic() + 60
                while worker.pending < 2 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert worker.pending == 2
                gate.set()
                assert started.wait(120), "the batch started"
                sock.close()
                left.set()
                resp = other.result(timeout=300)
        finally:
            gate.set()
        holder.future.result(timeout=60)
        queue = httpx.get(f"{server.url}/health").json()["queue"]
    assert resp.status_code == 200 and resp.json()["choices"][0]["text"] == expected.text
    assert outcome == {leaving: "Cancelled", staying: "answered"}
    assert queue["largest_batch"] == 2 and queue["cancelled"] == 1


def test_a_request_arriving_while_its_batch_runs_joins_it(pipeline, monkeypatch):
    """A batch of one sr-rag request is held at its first event while two more arrive: one of the same
    key (streamed) and one with another token budget. The first joins the running batch (counted
    in ``queue.joined``) and streams its batch-1 answer; the other waits for its own batch."""
    import functools
    import threading
    import time

    from dynaprag.serve.app import create_app
    from dynaprag.serve.server import ServerThread

    first, joining, other = demo_questions()[:3]
    budgets = {first: MAX_TOKENS, joining: MAX_TOKENS, other: MAX_TOKENS - 2}
    alone = {q: pipeline.answer(q, method="sr-rag", max_new_tokens=b) for q, b in budgets.items()}
    held, release = threading.Event(), threading.Event()
    real = pipeline.answer_many

    @functools.wraps(real)
    def answer_many(questions, *args, on_event, **kwargs):
        def hold_first_event(index: int, event: dict) -> None:
            if not held.is_set():
                held.set()
                release.wait(120)
            on_event(index, event)
        return real(questions, *args, on_event=hold_first_event, **kwargs)

    monkeypatch.setattr(pipeline, "answer_many", answer_many)
    with ServerThread(create_app(pipeline, batch_size=8, max_queue=8)) as server:
        worker = server.app.state.service.worker
        model = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]

        def ask(question: str, stream: bool = False) -> dict:
            return send(server.url, {"model": model, "prompt": question, "max_tokens": budgets[question],
                                     "dynaprag": {"method": "sr-rag"}, "stream": stream})

        def queued(n: int) -> bool:
            deadline = time.monotonic() + 60
            while worker.pending < n and time.monotonic() < deadline:
                time.sleep(0.02)
            return worker.pending == n

        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            try:
                running = pool.submit(ask, first)
                assert held.wait(120), "the first batch started"
                late = pool.submit(ask, joining, True)
                assert queued(1)
                elsewhere = pool.submit(ask, other)
                assert queued(2)
            finally:
                release.set()
            results = {q: f.result(timeout=300) for q, f in ((first, running), (joining, late), (other, elsewhere))}
        queue = httpx.get(f"{server.url}/health").json()["queue"]

    for question, result in results.items():
        assert result["status"] == 200, result["text"][:300]
        assert result["text"] == alone[question].text, question
        assert result["ext"]["short"] == alone[question].short
    assert queue["joined"] == 1 and queue["batches"] == 2 and queue["largest_batch"] == 2, queue
    assert queue["completed"] == 3 and queue["failed"] == 0 and queue["pending"] == 0
