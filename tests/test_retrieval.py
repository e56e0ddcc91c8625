"""Retrievers on a small corpus the test writes: BM25, dense, hybrid, milvus-lite, cache, ES body."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from dynaprag.corpora import read_passages
from dynaprag.corpus import Passage
from dynaprag.retrieval import RetrieverConfig, build_retriever
from floats import approx32
from dynaprag.retrieval.base import Hit, Retriever
from dynaprag.retrieval.bm25 import BM25Retriever
from dynaprag.retrieval.cache import CachedRetriever
from dynaprag.retrieval.hybrid import HybridRetriever, rrf
from dynaprag.retrieval.store import PassageStore

FIXTURE = [
    {"id": "p1", "title": "Lake Baikal", "text": "Lake Baikal in Siberia is the deepest lake in the world."},
    {"id": "p2", "title": "Siberia", "text": "Siberia is a vast region of Russia east of the Ural Mountains."},
    {"id": "p3", "title": "Ural Mountains", "text": "The Ural Mountains run from north to south through western Russia."},
    {"id": "p4", "title": "Mount Kilimanjaro", "text": "Kilimanjaro is a dormant volcano in Tanzania, the highest mountain in Africa."},
    {"id": "p5", "title": "Tanzania", "text": "Tanzania is a country in East Africa whose capital is Dodoma."},
    {"id": "p6", "title": "Violin", "text": "The violin is a wooden string instrument played with a bow."},
    {"id": "p7", "title": "Antonio Stradivari", "text": "Antonio Stradivari was an Italian luthier famous for his violins, made in Cremona."},
    {"id": "p8", "title": "Cremona", "text": "Cremona is a city in Lombardy, northern Italy, on the left bank of the Po river."},
    {"id": "p9", "title": "Espresso", "text": "Espresso is coffee brewed by forcing hot water through finely ground beans."},
    {"id": "p10", "title": "Photosynthesis", "text": "Photosynthesis lets plants turn light, water and carbon dioxide into sugar."},
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "fixture.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in FIXTURE), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bm25(corpus, tmp_path_factory):
    return BM25Retriever.build(read_passages(corpus), tmp_path_factory.mktemp("idx") / "bm25", progress=False)


@pytest.fixture(scope="module")
def dense(corpus, tmp_path_factory):
    from dynaprag.retrieval.dense import DenseRetriever

    return DenseRetriever.build(read_passages(corpus), tmp_path_factory.mktemp("idx") / "dense", progress=False)


# --- BM25 -------------------------------------------------------------------------------------

def test_bm25_finds_the_right_passage_with_title_and_text(bm25):
    hits = bm25.search(["deepest lake", "Who made violins in Cremona?", "capital of Tanzania"], 3)
    assert [h[0].id for h in hits] == ["p1", "p7", "p5"]
    top = hits[0][0]
    assert (top.title, top.text) == ("Lake Baikal", FIXTURE[0]["text"])
    assert all(a.score >= b.score for a, b in zip(hits[1], hits[1][1:]))


def test_bm25_stems_and_drops_stopwords(bm25):
    assert bm25.search_one("violins", 1)[0].id in ("p6", "p7")  # "violin" matches after stemming
    assert bm25.search_one("the of in is", 3) == []  # stop-words only: no match, no hits
    assert bm25.search([], 3) == [] and len(bm25.search_one("Italy", 50)) <= len(FIXTURE)


def test_bm25_scores_equal_lucene_formula(tmp_path):
    """Kamphuis et al. 2020 Lucene BM25 by hand on three documents (no stemming/stop-words)."""
    docs = [Passage("d0", "", "apple banana apple", {"url": "u0"}), Passage("d1", "", "banana cherry"),
            Passage("d2", "", "cherry date elderberry fig")]
    r = BM25Retriever.build(docs, tmp_path / "i", stemmer="none", stopwords="none", progress=False)
    k1, b, avgdl = 1.2, 0.75, 3.0

    def term(tf, dl, df):
        return math.log(1 + (3 - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * dl / avgdl))

    (hit,) = r.search_one("apple", 5)
    assert hit.id == "d0" and hit.score == approx32(term(2, 3, 1))  # bm25s scores in float32
    assert hit.passage.extra == {"url": "u0"}  # extra fields survive the passage store
    scores = {h.id: h.score for h in r.search_one("banana cherry", 5)}
    assert scores["d1"] == approx32(2 * term(1, 2, 2))
    assert scores["d0"] == approx32(term(1, 3, 2))


def test_bm25_persistence_roundtrip_is_memory_mapped(bm25):
    again = BM25Retriever(bm25.index_dir)
    queries = ["Russia mountains", "coffee beans"]
    assert again.search(queries, 4) == bm25.search(queries, 4)
    assert isinstance(again.model.scores["data"], np.memmap)
    assert again.fingerprint == bm25.fingerprint and "k1=1.2:b=0.75:lucene" in again.fingerprint


def test_passage_store_random_access(bm25):
    store = PassageStore(bm25.index_dir)
    assert len(store) == len(FIXTURE)
    assert store[7].id == "p8" and store.row_of("p3") == 2
    with pytest.raises(IndexError):
        store[len(FIXTURE)]


def test_build_retriever_builds_once_then_reloads(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAPRAG_CACHE", str(tmp_path / "cache"))
    config = RetrieverConfig(corpus=str(corpus))
    first = build_retriever(config, progress=False)
    folder = config.resolved_index_dir()
    assert folder.parent == tmp_path / "cache" / "indexes" and folder.name.startswith("bm25-")
    stamp = (folder / "meta.json").stat().st_mtime_ns
    second = build_retriever(config, progress=False)
    assert (folder / "meta.json").stat().st_mtime_ns == stamp
    assert second.search_one("Stradivari", 1)[0].id == first.search_one("Stradivari", 1)[0].id == "p7"
    other = RetrieverConfig(corpus=str(corpus), k1=0.9)
    assert other.resolved_index_dir() != folder  # settings are part of the folder name
    with pytest.raises(ValueError, match="built with k1=1.2"):
        build_retriever(RetrieverConfig(corpus=str(corpus), index_dir=str(folder), k1=0.9), progress=False)


def test_default_config_serves_the_demo_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAPRAG_CACHE", str(tmp_path / "cache"))
    retriever = build_retriever(progress=False)
    assert retriever.search_one("Who directed the film Inception?", 1)[0].id == "inception"


def test_unknown_backend_lists_choices():
    with pytest.raises(KeyError, match="choose one of: bm25, dense, elastic, hybrid, lucene, milvus"):
        build_retriever(RetrieverConfig(backend="bm26"))


# --- cache ------------------------------------------------------------------------------------

class Exploding(Retriever):
    """An inner retriever that must not be called (proves a hit came from the cache file)."""

    def __init__(self, fingerprint):
        self._fp = fingerprint

    @property
    def fingerprint(self):
        return self._fp

    def search(self, queries, k):
        raise AssertionError(f"inner search called for {queries}")


def test_cache_memoises_and_persists(bm25, tmp_path):
    db = tmp_path / "cache.sqlite"
    cached = CachedRetriever(bm25, max_entries=2, path=db)
    first = cached.search(["Siberia lake", "violin bow", "Siberia lake"], 3)
    assert first[0] == first[2] == bm25.search_one("Siberia lake", 3)
    assert cached.stats == {"hits": 0, "misses": 2, "entries": 2}
    cached.search(["violin bow"], 3)
    cached.search(["violin bow"], 2)  # another k is another entry
    assert cached.stats["hits"] == 1 and cached.stats["misses"] == 3 and cached.stats["entries"] == 2
    cached.close()
    reopened = CachedRetriever(Exploding(bm25.fingerprint), path=db)
    assert reopened.search(["Siberia lake"], 3) == [first[0]]
    with pytest.raises(AssertionError):
        CachedRetriever(Exploding("another-index"), path=db).search(["Siberia lake"], 3)


# --- fusion -----------------------------------------------------------------------------------

def test_rrf_on_hand_made_rankings():
    fused = dict(rrf([["a", "b", "c"], ["c", "a", "d"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["d"] == pytest.approx(1 / 63) and fused["b"] == pytest.approx(1 / 62)
    assert [doc for doc, _ in rrf([["a", "b", "c"], ["c", "a", "d"]], k=60)] == ["a", "c", "b", "d"]
    assert [doc for doc, _ in rrf([["x", "y"], ["y", "x"]], k=0)] == ["x", "y"]  # tie: first seen
    with pytest.raises(ValueError):
        rrf([["a"]], k=-1)


# --- dense and hybrid -------------------------------------------------------------------------

def test_dense_semantic_match_and_roundtrip(dense):
    from dynaprag.retrieval.dense import DenseRetriever

    hits = dense.search(["Which plant process converts sunlight into sugar?",
                         "a wooden instrument you play with a bow"], 2)
    assert hits[0][0].id == "p10" and hits[1][0].id == "p6"
    assert -1.0 <= hits[0][1].score <= hits[0][0].score <= 1.0 + 1e-5
    again = DenseRetriever(dense.index_dir)
    assert again.index.ntotal == len(FIXTURE) and again.index.d == 384
    assert [h.id for h in again.search_one("coffee", 3)] == [h.id for h in dense.search_one("coffee", 3)]


def test_hybrid_fuses_bm25_and_dense(bm25, dense):
    hybrid = HybridRetriever([bm25, dense], rrf_k=60, depth=10)
    query = "Which Italian city is home to the violin maker Stradivari?"
    hits = hybrid.search_one(query, 3)
    expected = rrf([[h.id for h in bm25.search_one(query, 10)], [h.id for h in dense.search_one(query, 10)]])
    assert [(h.id, pytest.approx(h.score)) for h in hits] == [(d, pytest.approx(s)) for d, s in expected[:3]]
    assert hits[0].id == "p7" and hits[0].text == FIXTURE[6]["text"]


# --- k (hits per query) ----------------------------------------------------------------------

@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3"])
def test_every_backend_refuses_k_below_one_naming_k(bm25, dense, k):
    from dynaprag.retrieval.elastic import ElasticRetriever

    unreachable = ElasticRetriever("http://127.0.0.1:9", transport="http", timeout=0.1)
    for retriever in (bm25, dense, HybridRetriever([bm25, dense]), CachedRetriever(bm25), unreachable):
        with pytest.raises(ValueError, match=r"^k \(hits per query\) must be a positive integer"):
            retriever.search(["violin"], k)
        with pytest.raises(ValueError, match="^k "):
            retriever.search_one("violin", k)
    assert len(bm25.search_one("violin", 1)) == 1


# --- milvus-lite ------------------------------------------------------------------------------

def test_milvus_lite_bm25_dense_and_hybrid(corpus, tmp_path):
    import dataclasses

    config = RetrieverConfig(backend="milvus", corpus=str(corpus), index_dir=str(tmp_path / "milvus"),
                             cache=False)
    bm25_mode = build_retriever(config, progress=False)
    assert (tmp_path / "milvus" / "milvus.db").exists()
    hits = bm25_mode.search(["deepest lake Siberia", "capital Dodoma"], 3)
    assert hits[0][0].id == "p1" and hits[1][0].id == "p5"
    assert (hits[0][0].title, hits[0][0].text) == ("Lake Baikal", FIXTURE[0]["text"])
    assert hits[0][0].score > 0
    dense_mode = build_retriever(dataclasses.replace(config, milvus_search="dense"), progress=False)
    assert dense_mode.search_one("Which plant process converts sunlight into sugar?", 1)[0].id == "p10"
    hybrid = build_retriever(dataclasses.replace(config, milvus_search="hybrid"), progress=False)
    assert hybrid.search_one("Stradivari violins Cremona", 2)[0].id == "p7"
    with pytest.raises(ValueError, match="^k "):
        bm25_mode.search_one("Stradivari", 0)


# --- Elasticsearch ----------------------------------------------------------------------------

def test_elastic_request_body_matches_dragin_index(monkeypatch):
    from dynaprag.retrieval.elastic import ElasticRetriever, msearch_ndjson, request_body

    body = request_body("who made violins", 5)
    assert body == {"size": 5, "_source": ["title", "txt"],
                    "query": {"multi_match": {"query": "who made violins", "type": "best_fields",
                                              "fields": ["title", "txt"], "tie_breaker": 0.5}}}
    r = ElasticRetriever("http://user:pw@es.example:9200", "wiki", text_field="text")
    lines = msearch_ndjson("wiki", r.bodies(["a", "b"], 3)).splitlines()
    assert [json.loads(x) for x in lines[::2]] == [{"index": "wiki"}] * 2
    assert json.loads(lines[3])["query"]["multi_match"]["fields"] == ["title", "text"]
    assert "pw" not in r.fingerprint
    monkeypatch.delenv("DYNAPRAG_ES_URL", raising=False)
    with pytest.raises(ValueError, match="es_url"):
        build_retriever(RetrieverConfig(backend="elastic"))


@pytest.mark.skipif("DYNAPRAG_ES_URL" not in os.environ, reason="set DYNAPRAG_ES_URL to test a live index")
@pytest.mark.parametrize("transport", ["client", "http"])
def test_elastic_live_index(transport):
    config = RetrieverConfig(backend="elastic", es_index=os.environ.get("DYNAPRAG_ES_INDEX", "wiki"),
                             es_transport=transport, cache=False)
    hits = build_retriever(config).search(["Albert Einstein theory of relativity"], 5)[0]
    assert hits and all(h.text for h in hits)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))


# --- CLI --------------------------------------------------------------------------------------

def test_cli_index_build_and_search(corpus, tmp_path):
    from typer.testing import CliRunner

    from dynaprag.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["index", "build", "--corpus", str(corpus), "--index-dir", str(tmp_path / "i")])
    assert out.exit_code == 0, out.output
    assert "10 passages" in out.output and "passages/s" in out.output
    out = runner.invoke(app, ["search", "deepest lake", "-k", "2", "--corpus", str(corpus),
                              "--index-dir", str(tmp_path / "i")])
    assert out.exit_code == 0, out.output
    assert "Lake Baikal" in out.output
    out = runner.invoke(app, ["search", "x", "--backend", "nope"])
    assert out.exit_code == 2 and "unknown retrieval backend" in out.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(corpus.read_text() + '{"id": "p11", "title": "x"}\n', encoding="utf-8")
    out = runner.invoke(app, ["index", "build", "--corpus", str(bad), "--index-dir", str(tmp_path / "b")])
    assert out.exit_code == 2 and "bad.jsonl:11: missing field 'text'" in out.output.replace("\n", "")
    out = runner.invoke(app, ["index", "build", "--corpus", str(bad), "--index-dir", str(tmp_path / "b"),
                              "--skip-bad-lines"])
    assert out.exit_code == 0 and "1 bad lines skipped" in out.output
