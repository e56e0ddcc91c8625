"""The out-of-core BM25 index (issue 32) against real bm25s in memory, and its resume after kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import bm25s
import numpy as np
import pytest

from dynaprag.corpora import read_passages
from dynaprag.retrieval import RetrieverConfig, build_retriever, demo_corpus_path
from dynaprag.retrieval.analysis import Analyzer
from dynaprag.retrieval.bm25 import BM25Retriever, _tokenizer
from dynaprag.retrieval.bm25_disk import DiskBM25, bm25_settings, build_disk_index
from dynaprag.retrieval.index_dir import passage_text
from dynaprag.retrieval.readers import read_corpus
from dynaprag.retrieval.synthetic import fit_statistics, write_synthetic_tsv

QUERIES = ["Who directed Jaws?", "Where was Albert Einstein born?", "the of and", "zzzunknownword",
           "film film director", "Spielberg Cincinnati Ohio", "", "capital country river"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """3,000 synthetic DPR-TSV passages fitted on the packaged demo corpus (deterministic)."""
    path = tmp_path_factory.mktemp("syn") / "psgs.tsv"
    write_synthetic_tsv(path, 3000, fit_statistics(demo_corpus_path()), seed=7, progress=False)
    return path


def _query_texts(passages, n=40):
    """Queries made of passage words: many matches, ties, repeats and unknown words."""
    rng = np.random.default_rng(0)
    out = list(QUERIES)
    for p in passages[:n]:
        words = p.text.split()
        out.append(" ".join(rng.choice(words, size=min(5, len(words)))) + " qqqxyz")
    return out


def _assert_same_results(memory: BM25Retriever, disk: BM25Retriever, queries, k=10):
    """Same scores, bit for bit, and the same ids except the order among equal scores."""
    for q, m_hits, d_hits in zip(queries, memory.search(queries, k), disk.search(queries, k)):
        assert [h.score for h in m_hits] == [h.score for h in d_hits], q
        if m_hits and len(m_hits) == k:
            kth = m_hits[-1].score
            assert {h.id for h in m_hits if h.score > kth} == {h.id for h in d_hits if h.score > kth}, q
        else:
            assert {h.id for h in m_hits} == {h.id for h in d_hits}, q
        for hit in d_hits:
            assert hit.passage == disk.store[disk.store.row_of(hit.id)]


def test_analyzer_yields_bm25s_tokens():
    texts = [passage_text(p) for p in read_passages(demo_corpus_path())] + ["", "the of", "Émile Zola's café", "a b c"]
    for stemmer, stopwords in (("english", "en"), ("none", "none"), ("porter", "lucene")):
        tok = _tokenizer(stemmer, stopwords)
        ids, vocab = tok.tokenize(texts, update_vocab=True, return_as="tuple", show_progress=False)
        inverse = {i: t for t, i in vocab.items()}
        assert [[inverse[i] for i in doc] for doc in ids] == Analyzer(stemmer, stopwords).terms_many(texts)


@pytest.mark.parametrize("corpus_kind", ["demo", "synthetic"])
def test_disk_index_scores_equal_bm25s_in_memory(corpus_kind, synthetic, tmp_path):
    passages = list(read_corpus(demo_corpus_path() if corpus_kind == "demo" else synthetic))
    memory = BM25Retriever.build(passages, tmp_path / "memory", progress=False)
    disk = BM25Retriever.build(passages, tmp_path / "disk", layout="disk", chunk_size=7 if corpus_kind == "demo"
                               else 400, progress=False)
    assert disk.disk is not None and disk.meta["layout"] == "disk" and len(disk) == len(passages)
    queries = _query_texts(passages)
    for q in queries:  # every passage's score, not only the top k
        ids = [i for i in memory.tokenizer.tokenize([q], update_vocab=False, show_progress=False)[0]
               if i in memory.model.unique_token_ids_set]
        assert np.array_equal(memory.model.get_scores(ids), disk.disk.scores(disk.disk.query_columns(q))), q
    _assert_same_results(memory, disk, queries, k=10)
    _assert_same_results(memory, disk, queries, k=3)


def test_disk_index_is_bm25s_csc_layout_and_loads_with_bm25s(synthetic, tmp_path):
    passages = list(read_corpus(synthetic))[:800]
    build_disk_index(passages, tmp_path / "disk", chunk_size=150, slab_postings=2000, progress=False)
    ours = bm25s.BM25.load(str(tmp_path / "disk"), mmap=True)
    assert isinstance(ours.scores["data"], np.memmap) and ours.scores["num_docs"] == 800
    tok = _tokenizer("english", "en")
    ids, vocab = tok.tokenize([passage_text(p) for p in passages], return_as="tuple", show_progress=False)
    ref = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    ref.index((ids, vocab), show_progress=False)
    for term, column in ours.vocab_dict.items():  # each term's column: same rows, same float32 scores
        r = vocab[term]
        a, b = slice(ours.scores["indptr"][column], ours.scores["indptr"][column + 1]), \
            slice(ref.scores["indptr"][r], ref.scores["indptr"][r + 1])
        assert np.array_equal(ours.scores["indices"][a], ref.scores["indices"][b]), term
        assert np.array_equal(ours.scores["data"][a], ref.scores["data"][b]), term


@pytest.mark.parametrize("method", ["robertson", "atire", "bm25l", "bm25+"])
def test_other_bm25s_variants_score_the_same(method, tmp_path):
    passages = list(read_passages(demo_corpus_path()))
    memory = BM25Retriever.build(passages, tmp_path / "m", method=method, k1=0.9, b=0.4, progress=False)
    build_disk_index(passages, tmp_path / "d", settings=bm25_settings(0.9, 0.4, method), chunk_size=11,
                     progress=False)
    disk = DiskBM25(tmp_path / "d")
    for q in QUERIES[:6]:
        ids = [i for i in memory.tokenizer.tokenize([q], update_vocab=False, show_progress=False)[0]
               if i in memory.model.unique_token_ids_set]
        assert np.array_equal(memory.model.get_scores(ids), disk.scores(disk.query_columns(q))), (method, q)


def test_big_corpus_files_are_indexed_out_of_core(tmp_path, monkeypatch):
    import dynaprag.retrieval.bm25 as bm25

    monkeypatch.setattr(bm25, "DISK_LAYOUT_BYTES", 0)
    retriever = build_retriever(RetrieverConfig(index_dir=str(tmp_path / "idx"), cache=False), progress=False)
    assert retriever.meta["layout"] == "disk" and retriever.meta["source"]["checksum"].startswith("sha256:")
    assert retriever.meta["source"]["passages"] == retriever.meta["num_passages"] == 50
    monkeypatch.undo()
    memory = build_retriever(RetrieverConfig(index_dir=str(tmp_path / "memory"), cache=False), progress=False)
    assert memory.meta.get("layout") is None
    assert retriever.search_one("Who directed Jaws?", 3) == memory.search_one("Who directed Jaws?", 3)


def test_an_empty_corpus_is_refused_and_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError, match="empty corpus"):
        build_disk_index(iter([]), tmp_path / "idx" / "bm25", progress=False)
    assert [p.name for p in (tmp_path / "idx").iterdir()] == ["bm25.lock"]


def test_parallel_chunk_workers_build_the_same_index(synthetic, tmp_path):
    for workers in (1, 2):
        build_disk_index(read_corpus(synthetic), tmp_path / f"w{workers}", chunk_size=450, workers=workers,
                         progress=False)
    for name in ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "vocab.bytes.npy",
                 "passages.jsonl", "passages.offsets.npy"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name


KILLED_BUILD = textwrap.dedent("""
    import os, signal, sys
    from dynaprag.retrieval import bm25_chunks, bm25_merge
    from dynaprag.retrieval.bm25_disk import build_disk_index
    from dynaprag.retrieval.readers import read_corpus

    corpus, folder, log, when = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    write_chunk, score_slab = bm25_chunks.write_chunk, bm25_merge.score_slab
    calls = {"chunk": 0, "slab": 0}

    def chunk(folder_, index, passages, analyzer, store):
        calls["chunk"] += 1
        with open(log, "a") as fh:
            fh.write(f"chunk {index}\\n")
        if when == "chunk" and calls["chunk"] == 4:  # a torn chunk: half its passages stored
            store.write(b'{"id": "torn"')
            store.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return write_chunk(folder_, index, passages, analyzer, store)

    def slab(*args, **kwargs):
        calls["slab"] += 1
        if when == "merge" and calls["slab"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return score_slab(*args, **kwargs)

    bm25_chunks.write_chunk, bm25_merge.score_slab = chunk, slab
    build_disk_index(read_corpus(corpus), folder, chunk_size=300, slab_postings=5000, progress=False)
""")


def test_build_resumes_after_kill_9_without_redoing_chunks(synthetic, tmp_path):
    folder, log = tmp_path / "killed" / "bm25", tmp_path / "chunks.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for when in ("chunk", "merge", "none"):
        proc = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(synthetic), str(folder), str(log), when],
                              env=env, capture_output=True, text=True, timeout=600)
        expected = -signal.SIGKILL if when != "none" else 0
        assert proc.returncode == expected, (when, proc.stderr[-2000:])
    runs = log.read_text().split("\n")
    # 10 chunks of 300: the first run commits 3 and dies in the 4th; the second redoes only the 4th onwards
    # and dies in the merge; the third only finishes the merge
    assert runs.count("chunk 0") == 1 and runs.count("chunk 3") == 2 and runs.count("chunk 9") == 1
    reference = tmp_path / "straight"
    build_disk_index(read_corpus(synthetic), reference, chunk_size=300, slab_postings=5000, progress=False)
    for name in ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "vocab.bytes.npy",
                 "passages.offsets.npy", "passages.jsonl", "vocab.index.json"):
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    meta, ref_meta = (json.loads((f / "meta.json").read_text()) for f in (folder, reference))
    assert meta["source"]["checksum"] == ref_meta["source"]["checksum"] and meta["build_runs"] == 3
    assert not list(folder.parent.glob(".bm25.dynaprag-building*"))
    assert BM25Retriever(folder).search_one("film", 3) == BM25Retriever(reference).search_one("film", 3)


def test_maxscore_pruning_returns_the_dense_top_k(synthetic, tmp_path):
    """MaxScore reads fewer postings but returns the dense top k: same rows, same float32 scores."""
    passages = list(read_corpus(synthetic))
    build_disk_index(passages, tmp_path / "disk", chunk_size=1000, progress=False)
    index = DiskBM25(tmp_path / "disk")
    assert index.colmax is not None and isinstance(index.data.base, np.memmap)  # mapped, not loaded
    queries = _query_texts(passages, n=150) + [p.title + " " + p.text[:40] for p in passages[:50]]
    for k in (1, 3, 10, 50):
        for q in queries:
            pruned, dense = index.top_k(q, k), index.top_k(q, k, prune=False)
            assert np.array_equal(pruned[0], dense[0]) and np.array_equal(pruned[1], dense[1]), (k, q)
    assert not any(b.any() for b in index._buffers())  # the reused buffers are left zeroed
