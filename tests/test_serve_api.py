"""The HTTP API on a real server: the real pipeline (SmolLM2-135M, BM25 over the demo corpus),
uvicorn on a free localhost port, the official ``openai`` client, bad requests, a burst.
"""
from __future__ import annotations

import concurrent.futures
import functools
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

QUESTION = "In what year was the director of Jaws born?"
MAX_QUEUE = 2


@pytest.fixture(scope="module")
def pipeline(lm):
    from dynaprag.pipeline import Pipeline, PipelineConfig

    return Pipeline.from_config(PipelineConfig(dtype="float32", max_new_tokens=32, max_retrievals=1), lm=lm)


@pytest.fixture(scope="module")
def server(pipeline):
    from dynaprag.serve.app import Limits, create_app
    from dynaprag.serve.server import ServerThread

    app = create_app(pipeline, max_queue=MAX_QUEUE, limits=Limits(max_body_bytes=64_000,
                                                                  max_question_chars=2000, max_tokens=64))
    with ServerThread(app) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def forced_dragin() -> dict:
    """DRAGIN (inline RIND, cut at the token) with θ = 0: it fires on a content word after the first one,
    so a rollback of already generated text is certain."""
    return {"method": "dragin-inline", "options": {"theta": 0.0}}


def untimed(retrievals: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in retrievals]


def test_health_and_models(server, client, pipeline):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["method"] == pipeline.config.method
    assert health["queue"]["max_queue"] == MAX_QUEUE
    ids = [m.id for m in client.models.list().data]
    assert ids == [pipeline.config.model]
    methods = httpx.get(f"{server.url}/v1/methods").json()
    assert {"dragin", "flare", "sr-rag", "wo-rag"} <= set(methods["data"])


def test_chat_completion_carries_the_trace(client, model_id, pipeline):
    resp = client.chat.completions.create(
        model=model_id, max_tokens=24, messages=[{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": QUESTION}],
        extra_body={"dynaprag": {"method": "sr-rag"}})
    content = resp.choices[0].message.content
    assert isinstance(content, str) and content.strip()
    assert resp.choices[0].finish_reason in ("stop", "length")
    ext = resp.model_extra["dynaprag"]
    trace = ext["trace"]
    assert ext["method"] == "sr-rag" and ext["question"] == QUESTION
    assert len(trace["retrievals"]) == 1
    first = trace["retrievals"][0]
    assert first["position"] == 0 and first["query"]
    assert first["hit_ids"] == [h.id for h in pipeline.retriever.search_one(first["query"], pipeline.config.k)]
    assert "spielberg" in first["hit_ids"] and len(first["hit_texts"]) == len(first["hit_ids"])
    tokens = trace["tokens"]
    assert 0 < len(tokens) <= 24
    assert all(isinstance(t["logprob"], float) and t["logprob"] <= 0 and t["entropy"] >= 0 for t in tokens)
    assert resp.usage.completion_tokens == len(tokens)
    assert resp.usage.prompt_tokens == trace["prompt_tokens"] > 0


def test_stream_equals_the_plain_answer_despite_rollbacks(client, model_id):
    """Streamed deltas never include a discarded draft: they add up to the non-streamed answer."""
    kwargs = dict(model=model_id, max_tokens=40, messages=[{"role": "user", "content": QUESTION}],
                  extra_body={"dynaprag": forced_dragin()})
    plain = client.chat.completions.create(**kwargs)
    trace = plain.model_extra["dynaprag"]["trace"]
    assert trace["retrievals"], "θ = 0 must make DRAGIN retrieve"
    assert trace["generated_tokens"] > len(trace["tokens"]), "a retrieval discarded drafted tokens"
    assert any(r["position"] > 0 for r in trace["retrievals"])

    deltas, final_ext, chunks = [], None, 0
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        ext = (chunk.model_extra or {}).get("dynaprag")
        if ext and "trace" in ext:
            final_ext = ext
    assert "".join(deltas) == plain.choices[0].message.content
    assert len(deltas) >= 2, "text arrives in more than one piece"
    assert final_ext is not None and untimed(final_ext["trace"]["retrievals"]) == untimed(trace["retrievals"])
    assert not [n for n in final_ext["trace"]["notes"] if n.startswith("stream:")]


def test_wo_rag_streams_token_by_token(client, model_id):
    kwargs = dict(model=model_id, max_tokens=12, prompt=QUESTION, extra_body={"dynaprag": {"method": "wo-rag"}})
    plain = client.completions.create(**kwargs)
    assert plain.choices[0].text.strip()
    assert plain.model_extra["dynaprag"]["trace"]["retrievals"] == []
    pieces = [c.choices[0].text for c in client.completions.create(stream=True, **kwargs) if c.choices]
    assert "".join(pieces) == plain.choices[0].text
    assert len([p for p in pieces if p]) >= 3


def test_retrieve_endpoint(server):
    resp = httpx.post(f"{server.url}/v1/retrieve", json={"query": ["Jaws 1975 thriller film", "Ulm"], "k": 2})
    assert resp.status_code == 200
    rows = resp.json()["data"]
    assert [r["query"] for r in rows] == ["Jaws 1975 thriller film", "Ulm"]
    assert rows[0]["hits"][0]["id"] == "jaws" and len(rows[0]["hits"]) == 2
    assert any(h["id"] == "ulm" for h in rows[1]["hits"])
    assert rows[0]["hits"][0]["score"] >= rows[0]["hits"][1]["score"]


BAD_REQUESTS = [
    ("malformed json", "/v1/chat/completions", b'{"model": "m", "messages": [', 400, "not valid JSON"),
    ("not an object", "/v1/chat/completions", b"[1, 2]", 400, "JSON object"),
    ("missing messages", "/v1/chat/completions", {"model": "MODEL"}, 400, "messages"),
    ("wrong type", "/v1/completions", {"model": "MODEL", "prompt": QUESTION, "max_tokens": "5"}, 400, "max_tokens"),
    ("stream not bool", "/v1/completions", {"model": "MODEL", "prompt": QUESTION, "stream": "yes"}, 400, "stream"),
    ("no user message", "/v1/chat/completions", {"model": "MODEL", "messages": [{"role": "system", "content": "x"}]},
     400, "user message"),
    ("stop strings", "/v1/completions", {"model": "MODEL", "prompt": QUESTION, "stop": ["\n"]}, 400, "stop"),
    ("n > 1", "/v1/completions", {"model": "MODEL", "prompt": QUESTION, "n": 2}, 400, "n"),
    ("sampling temperature", "/v1/completions", {"model": "MODEL", "prompt": QUESTION, "temperature": 0.7}, 400,
     "decodes greedily"),
    ("sampling seed", "/v1/chat/completions",
     {"model": "MODEL", "messages": [{"role": "user", "content": QUESTION}], "seed": 3}, 400, "seed"),
    ("unknown method", "/v1/chat/completions",
     {"model": "MODEL", "messages": [{"role": "user", "content": QUESTION}], "dynaprag": {"method": "magic"}},
     400, "choose one of"),
    ("unknown knob", "/v1/chat/completions",
     {"model": "MODEL", "messages": [{"role": "user", "content": QUESTION}],
      "dynaprag": {"method": "dragin", "options": {"thetaa": 1}}}, 400, "thetaa"),
    ("unknown knob, streaming", "/v1/completions",
     {"model": "MODEL", "prompt": QUESTION, "stream": True, "dynaprag": {"options": {"no_such_knob": 1}}},
     400, "no_such_knob"),
    # A request chooses only the method and its numeric knobs: never a path, a store or training settings.
    ("store path", "/v1/chat/completions",
     {"model": "MODEL", "messages": [{"role": "user", "content": QUESTION}],
      "dynaprag": {"method": "prag", "options": {"store": "/tmp/not-a-store"}}}, 400, "cannot be set per request"),
    ("translator path", "/v1/completions",
     {"model": "MODEL", "prompt": QUESTION, "dynaprag": {"method": "dyprag", "options": {"translator": "/etc/passwd"}}},
     400, "cannot be set per request"),
    ("training settings", "/v1/completions",
     {"model": "MODEL", "prompt": QUESTION, "dynaprag": {"method": "prag", "options": {"encode": {"epochs": 2}}}},
     400, "cannot be set per request"),
    ("knob out of range", "/v1/completions",
     {"model": "MODEL", "prompt": QUESTION, "dynaprag": {"method": "dragin", "options": {"trigger.look_ahead": -3}}},
     400, "look_ahead"),
    ("unknown model", "/v1/completions", {"model": "gpt-4o", "prompt": QUESTION}, 404, "does not exist"),
    ("too many tokens", "/v1/completions", {"model": "MODEL", "prompt": QUESTION, "max_tokens": 100000}, 400, "limit"),
    ("question too long", "/v1/completions", {"model": "MODEL", "prompt": "why " * 1000}, 413, "characters"),
    ("body too large", "/v1/completions", {"model": "MODEL", "prompt": "x" * 100_000}, 413, "bytes"),
    ("empty retrieve query", "/v1/retrieve", {"query": " ", "k": 3}, 400, "query"),
    ("retrieve k wrong type", "/v1/retrieve", {"query": "Jaws", "k": "three"}, 400, "k"),
]


@pytest.mark.parametrize("name,path,body,status,needle", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_clear_4xx(server, model_id, name, path, body, status, needle):
    if isinstance(body, dict):
        content = json.dumps(body).replace('"MODEL"', json.dumps(model_id)).encode()
    else:
        content = body
    resp = httpx.post(f"{server.url}{path}", content=content, headers={"Content-Type": "application/json"},
                      timeout=120)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert needle.lower() in error["message"].lower()
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_openai_client_raises_typed_errors(client, model_id):
    with pytest.raises(openai.BadRequestError, match="choose one of"):
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": QUESTION}],
                                       extra_body={"dynaprag": {"method": "nope"}})
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="not-" + model_id, prompt=QUESTION)


def test_burst_is_answered_or_refused_never_lost(server, model_id):
    """8 simultaneous requests against 1 worker + 2 queue slots: each gets 200 or 503.

    A batch takes only requests that were waiting (at most 2) and 2 more may wait while it runs,
    so at most 2 + 2 are answered and the rest refused."""
    before = httpx.get(f"{server.url}/health").json()["queue"]
    body = {"model": model_id, "prompt": QUESTION, "max_tokens": 16, "dynaprag": {"method": "wo-rag"}}

    def send(i: int):
        with httpx.Client(timeout=300) as http:
            return http.post(f"{server.url}/v1/completions", json=body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(send, range(8)))
    codes = sorted(r.status_code for r in responses)
    assert len(responses) == 8 and set(codes) <= {200, 503}, codes
    ok = [r for r in responses if r.status_code == 200]
    busy = [r for r in responses if r.status_code == 503]
    assert 1 <= len(ok) <= 2 * MAX_QUEUE and busy, codes
    texts = {r.json()["choices"][0]["text"] for r in ok}
    assert len(texts) == 1 and texts.pop().strip(), "greedy decoding gives every accepted request the same answer"
    for r in busy:
        assert int(r.headers["Retry-After"]) >= 1 and "busy" in r.json()["error"]["message"]
    after = httpx.get(f"{server.url}/health").json()["queue"]
    assert after["refused"] - before["refused"] == len(busy)
    assert after["completed"] - before["completed"] == len(ok)
    assert after["pending"] == 0
    again = httpx.post(f"{server.url}/v1/completions", json=body, timeout=300)
    assert again.status_code == 200


def test_a_client_leaving_a_stream_frees_the_worker(server, model_id):
    body = {"model": model_id, "prompt": QUESTION, "max_tokens": 64, "stream": True,
            "dynaprag": {"method": "wo-rag"}}
    before = httpx.get(f"{server.url}/health").json()["queue"]
    with httpx.Client(timeout=300) as http, http.stream("POST", f"{server.url}/v1/completions", json=body) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                break
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        queue = httpx.get(f"{server.url}/health").json()["queue"]
        if not queue["busy"] and queue["completed"] > before["completed"]:
            break
        time.sleep(0.1)
    assert queue["failed"] == before["failed"] + 1, "the abandoned job was cancelled, not run to the end"
    assert not queue["busy"]


# --- clients that leave, and an honest Retry-After (issue 15, item 9) ---

def health_queue(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=60).json()["queue"]


def wait_for_queue(url: str, predicate, timeout: float = 120) -> dict:
    """Poll ``/health`` until ``predicate(queue)`` holds (or ``timeout`` passes); the last reading."""
    deadline = time.monotonic() + timeout
    queue = health_queue(url)
    while not predicate(queue) and time.monotonic() < deadline:
        time.sleep(0.05)
        queue = health_queue(url)
    return queue


def send_and_hold(server, body: dict) -> socket.socket:
    """POST ``body`` without reading the answer: closing the socket is a client that leaves."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection((server.host, server.port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


@pytest.fixture
def questions_asked(pipeline, monkeypatch) -> list[dict]:
    """Every question the real ``pipeline.answer_many`` (the server's only way to answer) was given
    during the test, and how it ended."""
    real = pipeline.answer_many
    calls: list[dict] = []

    @functools.wraps(real)
    def answer_many(questions, *args, **kwargs):
        batch = [{"question": q, "outcome": "running"} for q in questions]
        calls.extend(batch)
        for index, result in real(questions, *args, **kwargs):
            batch[index]["outcome"] = type(result).__name__ if isinstance(result, BaseException) else "answered"
            yield index, result

    monkeypatch.setattr(pipeline, "answer_many", answer_many)
    return calls


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_a_request_whose_client_left_while_queued_never_runs(server, model_id, questions_asked, stream):
    """The worker is held by another job; the queued request's client leaves; it must never start
    (and must give its queue slot back at once)."""
    worker = server.app.state.service.worker
    before = health_queue(server.url)
    question = f"Who directed Jaws? (asked by a client that left, stream={stream})"
    gate = threading.Event()
    holder = worker.submit(lambda _job: gate.wait(300))
    try:
        assert wait_for_queue(server.url, lambda q: q["busy"])["busy"]
        sock = send_and_hold(server, {"model": model_id, "prompt": question, "max_tokens": 8, "stream": stream,
                                      "dynaprag": {"method": "wo-rag"}})
        assert wait_for_queue(server.url, lambda q: q["pending"] == 1)["pending"] == 1
        sock.close()
        while_held = wait_for_queue(server.url, lambda q: q.get("dropped", 0) > before.get("dropped", 0), timeout=30)
    finally:
        gate.set()
    holder.future.result(timeout=300)
    after = wait_for_queue(server.url, lambda q: not q["busy"] and q["pending"] == 0)
    assert question not in [c["question"] for c in questions_asked], "the gone client's request was run"
    assert while_held["pending"] == 0 and while_held["busy"], "its slot was freed while the worker was busy"
    assert after["dropped"] == before["dropped"] + 1


def stall_at_first_token(real, question: str, started: threading.Event, left: threading.Event, outcome: dict):
    """``pipeline.answer_many`` whose ``question`` stalls at its first token until its client has
    left and the server has noticed (its next token check raises); ``outcome`` says how each ended."""

    @functools.wraps(real)
    def answer_many(questions, *args, on_event, **kwargs):
        def at_token(index: int, event: dict) -> None:
            if questions[index] == question and not started.is_set():
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

    return answer_many


def test_a_running_plain_request_stops_at_the_next_token_when_its_client_leaves(server, model_id, pipeline,
                                                                                monkeypatch):
    """The pipeline's first token waits until the client has left; the next token check must stop it."""
    question = "Who directed Jaws? (asked by a client that leaves mid-answer)"
    started, left, outcome = threading.Event(), threading.Event(), {}
    monkeypatch.setattr(pipeline, "answer_many", stall_at_first_token(pipeline.answer_many, question, started, left,
                                                                      outcome))
    before = health_queue(server.url)
    sock = send_and_hold(server, {"model": model_id, "prompt": question, "max_tokens": 64,
                                  "dynaprag": {"method": "wo-rag"}})
    assert started.wait(120), "the request started"
    sock.close()
    left.set()
    after = wait_for_queue(server.url, lambda q: not q["busy"] and q["completed"] > before["completed"])
    assert outcome.get(question) == "Cancelled", outcome
    assert after["cancelled"] == before["cancelled"] + 1


def test_retry_after_follows_measured_service_times(pipeline, model_id):
    """After one slow request and a few fast ones, a refusal's Retry-After is about the fast requests'
    service time × the jobs ahead (the reported defect: 116 s for a queue that drained in ~10 s)."""
    from dynaprag.serve.app import create_app
    from dynaprag.serve.server import ServerThread

    waiting = 6
    fast = {"model": model_id, "prompt": QUESTION, "max_tokens": 2, "dynaprag": {"method": "wo-rag"}}
    slow = {"model": model_id, "prompt": QUESTION, "max_tokens": 64, "dynaprag": forced_dragin()}
    with ServerThread(create_app(pipeline, max_queue=waiting)) as fresh, httpx.Client(timeout=300) as http:
        assert http.post(f"{fresh.url}/v1/completions", json=slow).status_code == 200
        seconds = []
        for _ in range(5):
            start = time.monotonic()
            assert http.post(f"{fresh.url}/v1/completions", json=fast).status_code == 200
            seconds.append(time.monotonic() - start)
        service = sum(seconds) / len(seconds)
        worker = fresh.app.state.service.worker
        gate = threading.Event()
        held = [worker.submit(lambda _job: gate.wait(300))]
        try:
            assert wait_for_queue(fresh.url, lambda q: q["busy"])["busy"]
            held += [worker.submit(lambda _job: gate.wait(300)) for _ in range(waiting)]
            refused = http.post(f"{fresh.url}/v1/completions", json=fast)
        finally:
            gate.set()
        for job in held:
            job.future.result(timeout=300)
    assert refused.status_code == 503
    retry_after = int(refused.headers["Retry-After"])
    assert service * waiting / 2 <= retry_after <= math.ceil(2 * service * (1 + waiting)), (retry_after, seconds)


def test_retry_after_estimate_on_numbers():
    """The estimator alone: a prior before any measurement, weighted toward recent jobs, credit for
    the running job's elapsed time, a floor and a cap."""
    from dynaprag.serve.worker import ServiceTime

    est = ServiceTime(prior_seconds=2.0, weight=0.5, floor_seconds=1, cap_seconds=60)
    assert est.retry_after(pending=3, running_for=None) == 6  # 3 waiting × the 2 s prior
    est.record(40.0)  # the first measurement replaces the prior
    assert est.mean_seconds == 40.0
    for _ in range(5):
        est.record(1.0)
    assert est.mean_seconds == pytest.approx(1.0 + 39.0 / 32)
    assert est.retry_after(pending=2, running_for=0.0) == math.ceil(3 * est.mean_seconds)
    assert est.retry_after(pending=2, running_for=100.0) == math.ceil(2 * est.mean_seconds)
    assert est.retry_after(pending=0, running_for=100.0) == 1  # the floor
    assert est.retry_after(pending=1000, running_for=0.0) == 60  # the cap


def test_cli_serve_starts_a_server(tmp_path: Path):
    """`dynaprag serve` in a subprocess: loads the defaults once, answers, stops on SIGTERM."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "serve.yaml"
    config.write_text("dtype: float32\nmax_new_tokens: 16\n")
    cmd = [sys.executable, "-m", "dynaprag.cli", "serve", "--port", str(port), "--method", "sr-rag",
           "--config", str(config), "k=2", "--log-level", "warning"]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        health = httpx.get(f"{url}/health").json()
        assert health["method"] == "sr-rag"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        resp = client.chat.completions.create(model=health["model"],
                                              messages=[{"role": "user", "content": QUESTION}])
        trace = resp.model_extra["dynaprag"]["trace"]
        assert resp.choices[0].message.content.strip() and len(trace["retrievals"]) == 1
        assert len(trace["retrievals"][0]["hit_ids"]) == 2 and len(trace["tokens"]) <= 16
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_cli_serve_rejects_an_unknown_key():
    proc = subprocess.run([sys.executable, "-m", "dynaprag.cli", "serve", "no_such_key=1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no_such_key" in proc.stderr + proc.stdout


# --- the streaming commit rule on event sequences (pure; the server tests above run it for real) ---

def _feed(stream, events) -> str:
    return "".join(stream.feed(e) for e in events)


def test_commit_stream_never_sends_a_rolled_back_draft():
    from dynaprag.serve.stream import CommitStream

    s = CommitStream(may_roll_back=True, stops=("\n\n",))
    tok = lambda t: {"type": "token", "text": t}  # noqa: E731
    assert _feed(s, [tok(" It"), tok(" is"), tok(" 1967"), tok(".")]) == ""  # sentence not judged yet
    assert _feed(s, [{"type": "rollback", "keep_tokens": 2},
                     {"type": "retrieval", "position": 2}]) == "It is"
    assert _feed(s, [tok(" 1946"), tok(".")]) == ""
    assert _feed(s, [tok(" So")]) == " 1946."  # the next sentence began: the last one passed
    assert s.finish("It is 1946. So") == " So" and s.notes == []


def test_commit_stream_holds_back_stop_strings_and_notes_violations():
    from dynaprag.serve.stream import CommitStream, safe_prefix

    assert safe_prefix(" A.\n", ("\n\n", "Question:")) == "A."
    assert safe_prefix("A. Quest", ("Question:",)) == "A."
    assert safe_prefix("A.\n\nQuestion: B", ("\n\n",)) == "A."
    s = CommitStream(may_roll_back=False, stops=("\n\n",))
    assert _feed(s, [{"type": "token", "text": t} for t in (" Ulm", ".", "\n")]) == "Ulm."
    assert _feed(s, [{"type": "token", "text": "\n"}, {"type": "token", "text": "Q"}]) == ""
    assert s.finish("Ulm.") == ""
    bad = CommitStream(may_roll_back=False)
    _feed(bad, [{"type": "token", "text": " A"}, {"type": "rollback", "keep_tokens": 0}])
    assert bad.finish("B") == "" and any("stream:" in n for n in bad.notes)
