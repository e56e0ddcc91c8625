"""Issue 27: one request cannot take the server down (real server on loopback, the real tiny model).

Bounded memory (a token budget and a memory budget, refused before decoding), cancellation
at every forward pass, upper bounds on every knob, no 500 for a lone surrogate or a missing
translator, 413 for a chunked body over the limit, 408 for a body that never arrives, bounds
on ``/v1/retrieve``, an empty body that names the fields, and PRAG's on-demand encoding off
unless the operator enables it.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.slow

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

QUESTION = "In what year was the director of Jaws born?"


@pytest.fixture(scope="module")
def pipeline(lm):
    from dynaprag.pipeline import Pipeline, PipelineConfig

    return Pipeline.from_config(PipelineConfig(dtype="float32", max_new_tokens=16, max_retrievals=1), lm=lm)


def serve(pipeline, **limits):
    from dynaprag.serve.app import Limits, create_app
    from dynaprag.serve.server import ServerThread

    return ServerThread(create_app(pipeline, max_queue=4, limits=Limits(**limits)))


@pytest.fixture(scope="module")
def server(pipeline):
    with serve(pipeline, max_body_bytes=64_000, max_request_tokens=600, memory_budget_mb=8192,
               body_timeout_seconds=2.0, max_queries=4, max_k=5) as running:
        yield running


def model_of(pipeline) -> str:
    return pipeline.config.model


def post(server, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=300, **kwargs)


def error(resp: httpx.Response) -> dict:
    return resp.json()["error"]


# --- item 1: a token budget and a memory budget, refused before decoding -----------------------

def test_a_question_over_the_token_budget_gets_413_naming_the_limit(server, pipeline):
    long_question = "Which river flows through the city? " * 60  # ~2,200 characters, ~500 tokens
    resp = post(server, "/v1/completions", {"model": model_of(pipeline), "prompt": long_question,
                                            "max_tokens": 16, "dynaprag": {"method": "dragin"}})
    assert resp.status_code == 413
    assert "600 tokens per request" in error(resp)["message"] and "--max-request-tokens" in error(resp)["message"]
    assert error(resp)["param"] == "prompt"
    assert httpx.get(f"{server.url}/health").json()["queue"]["completed"] == 0, "nothing was decoded"


def test_a_request_over_the_memory_budget_gets_413_before_it_queues(pipeline):
    """SeaKR holds samples + 2 copies of the answer's cache: 64 samples do not fit a 64 MiB budget."""
    with serve(pipeline, memory_budget_mb=64) as small:
        resp = post(small, "/v1/completions", {"model": model_of(pipeline), "prompt": QUESTION, "max_tokens": 16,
                                               "dynaprag": {"method": "seakr", "options": {"trigger.samples": 64}}})
        assert resp.status_code == 413
        assert "budget is 64 MiB" in error(resp)["message"] and "--memory-budget-mb" in error(resp)["message"]
        assert httpx.get(f"{small.url}/health").json()["queue"]["completed"] == 0


def test_the_memory_estimate_grows_with_tokens_and_cache_copies(pipeline):
    from dynaprag.serve.budget import MemoryModel, cache_copies

    memory = MemoryModel.of(pipeline.lm)
    config = pipeline.lm.model.config
    assert memory.kv_bytes_per_token == 2 * config.num_hidden_layers * config.num_key_value_heads * (
        config.hidden_size // config.num_attention_heads) * 4  # float32
    assert memory.request_bytes(2000) == 2 * memory.request_bytes(1000)
    seakr = pipeline.method("seakr", {"trigger.samples": 20, "selector.samples": 20})
    assert cache_copies(seakr) == 1 + 22
    assert cache_copies(pipeline.method("dragin")) == 1
    assert memory.request_bytes(1000, cache_copies(seakr)) == 1000 * (23 * memory.kv_bytes_per_token
                                                                      + memory.work_bytes_per_token)


def test_a_budget_too_small_for_two_keeps_the_second_waiting(pipeline):
    """Two requests whose costs do not fit together are decoded one after the other, not joined."""
    from dynaprag.serve.worker import Worker

    worker = Worker(max_queue=4, batch_size=4, run_batch=lambda key, jobs: ((i, len(jobs)) for i in range(len(jobs))),
                    memory_budget=100)
    gate = threading.Event()
    holder = worker.start().submit(lambda _job: gate.wait(60))
    first, second = worker.submit_batched("k", "a", cost=60), worker.submit_batched("k", "b", cost=60)
    gate.set()
    holder.future.result(timeout=60)
    assert first.future.result(timeout=60) == 1 and second.future.result(timeout=60) == 1  # each ran alone
    with pytest.raises(Exception, match="budget is 0 MiB"):
        worker.submit_batched("k", "c", cost=101)
    worker.stop()


# --- item 3: upper bounds, cancellation at every forward pass, on-demand encoding off --------

@pytest.mark.parametrize("options, needle", [({"trigger.samples": 200}, "must be <= 64"),
                                             ({"selector.sample_tokens": 100_000}, "must be <= 512")])
def test_every_count_knob_has_an_upper_bound(server, pipeline, options, needle):
    resp = post(server, "/v1/completions", {"model": model_of(pipeline), "prompt": QUESTION, "max_tokens": 8,
                                            "dynaprag": {"method": "seakr", "options": options}})
    assert resp.status_code == 400 and needle in error(resp)["message"]
    assert error(resp)["param"] == "dynaprag.options"


def test_an_integer_knob_without_its_own_max_is_capped_in_a_request(server, pipeline):
    resp = post(server, "/v1/completions", {"model": model_of(pipeline), "prompt": QUESTION, "max_tokens": 8,
                                            "dynaprag": {"method": "fl-rag", "options": {"n": 10**9}}})
    assert resp.status_code == 400 and "must be <= " in error(resp)["message"]


def test_a_seakr_request_stops_within_one_forward_pass_of_its_client_leaving(server, pipeline):
    """SeaKR spends hundreds of passes sampling between tokens (it ran on 41 s after its client left)."""
    model = pipeline.lm.model
    passes = {"n": 0}
    hook = model.register_forward_pre_hook(lambda _m, _a: passes.__setitem__("n", passes["n"] + 1))
    worker = server.app.state.service.worker
    before = worker.stats()
    try:
        payload = json.dumps({"model": model_of(pipeline), "prompt": QUESTION, "max_tokens": 16,
                              "dynaprag": {"method": "seakr"}}).encode()
        sock = socket.create_connection((server.host, server.port))
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        deadline = time.monotonic() + 300
        while passes["n"] < 30 and time.monotonic() < deadline:  # well inside the first step's samples
            time.sleep(0.01)
        running = list(worker._running)
        assert running, "the request is running"
        sock.close()
        while not running[0].cancelled.is_set() and time.monotonic() < deadline:
            time.sleep(0.001)
        noticed = passes["n"]
        while worker.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        after = passes["n"]
    finally:
        hook.remove()
    assert after - noticed <= 1, f"{after - noticed} forward passes ran after the server knew the client had left"
    assert worker.stats()["cancelled"] == before["cancelled"] + 1


def test_prag_on_a_server_answers_missing_adapters_in_context_by_default(pipeline, lm, tmp_path):
    from dynaprag.pipeline import Pipeline, PipelineConfig

    prag = Pipeline.from_config(PipelineConfig(dtype="float32", method="prag", max_new_tokens=8,
                                               injector={"name": "prag", "store": str(tmp_path / "store")}),
                                lm=lm, retriever=pipeline.retriever)
    with serve(prag) as running:
        resp = post(running, "/v1/completions", {"model": model_of(prag), "prompt": QUESTION, "max_tokens": 8})
    assert resp.status_code == 200, resp.text
    notes = " ".join(json.dumps(r) for r in resp.json()["dynaprag"]["trace"]["retrievals"]) + " ".join(
        resp.json()["dynaprag"]["trace"]["notes"])
    assert "fell back to in-context" in notes and "encoded on demand" not in notes
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.safetensors"))


# --- item 4: no 500s, and 413 for a chunked body over the limit ----------------------------

@pytest.mark.parametrize("path, field", [("/v1/completions", "prompt"), ("/v1/chat/completions", "messages")])
def test_a_lone_surrogate_is_a_400_naming_it(server, pipeline, path, field):
    question = 'Who directed Jaws \\ud800?'  # JSON's escape of a lone surrogate, as a hostile client sends it
    text = (f'"prompt": "{question}"' if field == "prompt"
            else f'"messages": [{{"role": "user", "content": "{question}"}}]')
    body = '{"model": %s, "max_tokens": 8, %s}' % (json.dumps(model_of(pipeline)), text)
    resp = httpx.post(f"{server.url}{path}", content=body.encode(), headers={"content-type": "application/json"},
                      timeout=60)
    assert resp.status_code == 400, resp.text
    assert "surrogate" in error(resp)["message"] and error(resp)["param"] == field


def test_dyprag_without_a_translator_is_a_400(server, pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAPRAG_TRANSLATOR", str(tmp_path / "none.safetensors"))
    resp = post(server, "/v1/completions", {"model": model_of(pipeline), "prompt": QUESTION, "max_tokens": 8,
                                            "dynaprag": {"method": "dyprag"}})
    assert resp.status_code == 400, resp.text
    assert "translator" in error(resp)["message"] and error(resp)["code"] == "method_unavailable"


def test_a_chunked_body_over_the_limit_is_413(server):
    def chunks():
        for _ in range(80):
            yield b" " * 1000  # 80 kB in chunks, no Content-Length: over the 64 kB limit
    resp = httpx.post(f"{server.url}/v1/completions", content=chunks(), headers={"content-type": "application/json"},
                      timeout=60)
    assert resp.status_code == 413 and error(resp)["code"] == "body_too_large"


# --- item 6: /v1/retrieve bounds and a body read timeout ------------------------------------

def test_retrieve_bounds_queries_and_k(server):
    many = post(server, "/v1/retrieve", {"query": ["Jaws"] * 5, "k": 2})
    assert many.status_code == 413 and "the limit is 4" in error(many)["message"]
    deep = post(server, "/v1/retrieve", {"query": "Jaws", "k": 50})
    assert deep.status_code == 400 and error(deep)["param"] == "k"
    assert post(server, "/v1/retrieve", {"query": ["Jaws"] * 4, "k": 5}).status_code == 200


def test_a_declared_body_that_never_arrives_gets_408(server):
    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):  # headers and body may come in separate packets; the server closes
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 408") and "did not arrive within 2 s" in reply


# --- item 7: an empty body names the fields -------------------------------------------------

@pytest.mark.parametrize("path, fields", [("/v1/chat/completions", "model, messages"),
                                          ("/v1/completions", "model, prompt"), ("/v1/retrieve", "query")])
def test_an_empty_body_names_the_required_fields(server, path, fields):
    resp = httpx.post(f"{server.url}{path}", content=b"", headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 400
    assert error(resp)["message"] == f"the request body is empty: send a JSON object with the required fields {fields}"
    assert error(resp)["param"] == fields.split(",")[0]
