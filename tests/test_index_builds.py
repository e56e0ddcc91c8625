"""Index builds that race, fail or are killed (issue 15, items 4 and 5) on real bm25s/FAISS/Milvus.

Two processes building the same index build it once and both serve it; a failed build
leaves nothing behind; a killed build's ``.NAME.dynaprag-building-<pid>`` folder is swept by the
next build once its process is gone, and a live builder's folder is left alone.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dynaprag.corpus import Passage
from dynaprag.files import TEMP_MARKER
from dynaprag.retrieval import RetrieverConfig, build_retriever
from dynaprag.retrieval.bm25 import BM25Retriever

TOPICS = ["violin", "volcano", "espresso", "glacier", "comet", "harbour", "orchard", "lighthouse"]


def passages(n: int) -> list[Passage]:
    """A corpus big enough for a build to take a moment, with one findable passage."""
    out = [Passage(f"d{i}", f"Note {i}", f"A note about the {TOPICS[i % len(TOPICS)]} number {i} "
                                         f"and the {TOPICS[(i * 3) % len(TOPICS)]}.") for i in range(n)]
    out.append(Passage("stradivari", "Antonio Stradivari", "Stradivari made violins in Cremona."))
    return out


def write_corpus(path: Path, n: int = 2000) -> Path:
    path.write_text("".join(json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n"
                            for p in passages(n)), encoding="utf-8")
    return path


def failing(items: list[Passage], after: int):
    """Yield ``after`` passages, then fail as a corpus reader does on a bad line."""
    for p in items[:after]:
        yield p
    raise ValueError(f"corpus.jsonl line {after + 1}: not valid JSON")


def leftovers(folder: Path) -> list[str]:
    """Temporary entries in an index folder's parent (lock files are not leftovers)."""
    return sorted(p.name for p in folder.iterdir()
                  if not p.name.endswith(".lock") and any(s in p.name for s in ("building", ".tmp", "dynaprag-")))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- item 4: two processes, one build -----------------------------------------------------------

RACE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import bm25s

    go, log, corpus = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    index = bm25s.BM25.index

    def counted(self, *args, **kwargs):  # count real index builds, and make them overlap
        with open(log, "a") as fh:
            fh.write("build\\n")
        time.sleep(1.0)
        return index(self, *args, **kwargs)

    bm25s.BM25.index = counted
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    while not go.exists():
        time.sleep(0.01)
    retriever = build_retriever(RetrieverConfig(corpus=corpus, cache=False), progress=False)
    print(retriever.search_one("Who made violins in Cremona?", 1)[0].id)
""")


def test_two_processes_build_the_bm25_index_once(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    env = {**os.environ, "DYNAPRAG_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    go, log = tmp_path / "go", tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(go), str(log), str(corpus)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert [out.split()[-1] for out, _ in outs] == ["stradivari", "stradivari"]
    assert log.read_text().split() == ["build"]
    assert leftovers(tmp_path / "cache" / "indexes") == []


# --- item 5: failures and kills leave nothing behind ----------------------------------------------

def test_failed_bm25_build_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="line 4"):
        BM25Retriever.build(failing(passages(10), 3), tmp_path / "idx" / "bm25", progress=False)
    assert leftovers(tmp_path / "idx") == [] and not (tmp_path / "idx" / "bm25").exists()


def test_bad_corpus_line_leaves_no_building_folder_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAPRAG_CACHE", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "corpus.jsonl", 50)
    with corpus.open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(ValueError, match=r"corpus\.jsonl:52:"):
        build_retriever(RetrieverConfig(corpus=str(corpus), cache=False), progress=False)
    indexes = tmp_path / "cache" / "indexes"
    assert not indexes.exists() or leftovers(indexes) == []


def test_dead_builders_leftovers_are_swept_and_a_live_ones_kept(tmp_path):
    parent = tmp_path / "idx"
    parent.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stale, kept = parent / f".bm25.dynaprag-building-{dead_pid()}", parent / f".bm25.dynaprag-building-{live.pid}"
        for folder in (stale, kept):
            folder.mkdir()
            (folder / TEMP_MARKER).write_text("")
            (folder / "passages.jsonl.tmp").write_bytes(b"x" * 1000)
        retriever = BM25Retriever.build(passages(10), parent / "bm25", progress=False)
        assert retriever.search_one("Stradivari", 1)[0].id == "stradivari"
        assert not stale.exists() and kept.exists()
    finally:
        live.kill()
        live.wait()


def test_failed_dense_build_keeps_only_encoded_chunks_for_resuming(tmp_path, monkeypatch, caplog):
    """A dense build keeps what is costly to redo (encoded chunks) and nothing else."""
    pytest.importorskip("faiss")
    from dynaprag.retrieval import dense

    monkeypatch.setattr(dense, "_CHUNK", 4)
    folder = tmp_path / "idx" / "dense"
    corpus = passages(10)
    with pytest.raises(ValueError, match="line 3"):
        dense.DenseRetriever.build(failing(corpus, 2), folder, progress=False)
    assert leftovers(tmp_path / "idx") == []  # nothing encoded yet: nothing kept
    with caplog.at_level(logging.WARNING, logger="dynaprag.retrieval.dense"), \
            pytest.raises(ValueError, match="line 10"):
        dense.DenseRetriever.build(failing(corpus, 9), folder, progress=False)
    (kept,) = [tmp_path / "idx" / name for name in leftovers(tmp_path / "idx")]
    assert sorted(p.name for p in kept.iterdir()) == ["embeddings"]
    assert len(list((kept / "embeddings").glob("*.npy"))) == 2
    assert str(kept) in caplog.text
    retriever = dense.DenseRetriever.build(corpus, folder, progress=False)
    assert retriever.search_one("Who made violins in Cremona?", 1)[0].id == "stradivari"
    assert leftovers(tmp_path / "idx") == []


def test_failed_milvus_build_drops_the_half_filled_collection(tmp_path):
    pytest.importorskip("pymilvus")
    from dynaprag.retrieval import milvus

    uri = str(tmp_path / "milvus.db")
    with pytest.raises(ValueError, match="line 4"):
        milvus.MilvusRetriever.build(failing(passages(10), 3), uri, "half", progress=False)
    assert not milvus._client(uri, None).has_collection("half")
