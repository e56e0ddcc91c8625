"""Readers of the real corpus formats, the BM25 analyser, presets, synthetic corpora and the index CLI (issue 32)."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from dynaprag.cli import app
from dynaprag.corpora import CorpusError, ReadStats
from dynaprag.retrieval import RetrieverConfig, demo_corpus_path
from dynaprag.retrieval.analysis import Analyzer
from dynaprag.retrieval.bm25_disk import build_disk_index
from dynaprag.retrieval.bm25_presets import bm25_preset
from dynaprag.retrieval.readers import count_passages, detect_format, read_corpus
from dynaprag.retrieval.synthetic import fit_statistics, write_synthetic_tsv

DPR = 'id\ttext\ttitle\n1\t"Aaron is a prophet, ""high priest"" and brother of Moses."\tAaron\n' \
      '2\t"Moses led the Israelites out of Egypt."\tMoses\n'
FLASHRAG = [{"id": "0", "contents": '"Aaron"\nAaron is a prophet and brother of Moses.'},
            {"id": "1", "contents": "Moses\nMoses led the Israelites.\nHe received the law.", "source": "wiki"}]
KILT = [{"_id": "1", "wikipedia_id": "290", "wikipedia_title": "A",
         "text": ["A\n", "A is the first letter.\n", "Section::::History.\n", "It comes from aleph.\n", "  "]}]


def write_jsonl(path, records, opener=open):
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_dpr_tsv_is_read_streamed_with_its_quoting(tmp_path):
    path = tmp_path / "psgs_w100.tsv"
    path.write_text(DPR, encoding="utf-8")
    passages = list(read_corpus(path))
    assert detect_format(path) == "dpr" and count_passages(path) == 2
    assert (passages[0].id, passages[0].title) == ("1", "Aaron")
    assert passages[0].text == 'Aaron is a prophet, "high priest" and brother of Moses.'


def test_flashrag_contents_split_into_title_and_text(tmp_path):
    path = write_jsonl(tmp_path / "wiki18_100w.jsonl", FLASHRAG)
    first, second = read_corpus(path)
    assert detect_format(path) == "flashrag" and count_passages(path) == 2
    assert (first.id, first.title, first.text) == ("0", "Aaron", "Aaron is a prophet and brother of Moses.")
    assert (second.title, second.text, second.extra) == ("Moses", "Moses led the Israelites.\nHe received the law.",
                                                         {"source": "wiki"})


def test_kilt_pages_become_paragraph_passages_with_provenance_ids(tmp_path):
    path = write_jsonl(tmp_path / "kilt_knowledgesource.json.gz", KILT, opener=gzip.open)
    passages = list(read_corpus(path))
    assert detect_format(path) == "kilt" and count_passages(path) is None
    assert [(p.id, p.title, p.text) for p in passages] == [("290_1", "A", "A is the first letter."),
                                                            ("290_3", "A", "It comes from aleph.")]


def test_bad_records_name_file_and_line_or_are_counted(tmp_path):
    path = write_jsonl(tmp_path / "flash.jsonl", [FLASHRAG[0], {"id": "9"}, {"id": "0", "contents": "T\nagain"}])
    with pytest.raises(CorpusError, match=r"flash\.jsonl:2: field 'contents': expected a string, got nothing"):
        list(read_corpus(path))
    stats = ReadStats()
    assert [p.id for p in read_corpus(path, skip_bad_lines=True, stats=stats)] == ["0"]
    assert stats.skipped == 2 and "flash.jsonl:3: duplicate passage id '0'" in stats.first_errors[1]
    with pytest.raises(ValueError, match="unknown corpus format 'xml'"):
        list(read_corpus(path, format="xml"))


def test_every_format_indexes_and_records_count_and_checksum(tmp_path):
    """The same two passages as DPR TSV and as FlashRAG JSONL: the same checksum."""
    tsv = tmp_path / "a.tsv"
    tsv.write_text(DPR, encoding="utf-8")
    flash = write_jsonl(tmp_path / "b.jsonl", [{"id": "1", "contents": "Aaron\nAaron is a prophet, \"high priest\" "
                                                "and brother of Moses."},
                                               {"id": "2",
                                                "contents": "Moses\nMoses led the Israelites out of Egypt."}])
    metas = [build_disk_index(read_corpus(p), tmp_path / f"idx-{p.stem}", progress=False) for p in (tsv, flash)]
    assert metas[0]["source"]["passages"] == 2 and metas[0]["source"]["checksum"] == metas[1]["source"]["checksum"]


def test_analyze_chunk_gives_the_terms_of_terms_across_batches_and_cache_resets():
    texts = [p.title + "\n" + p.text for p in read_corpus(demo_corpus_path())] * 3 + ["of the", "", "Zola's café"]
    analyzer = Analyzer("english", "en", cache_size=40)  # forces the word cache to reset between calls
    for _ in range(2):
        ids, lens, vocabulary = analyzer.analyze_chunk(texts)
        expected = Analyzer("english", "en").terms_many(texts)
        assert lens.tolist() == [len(t) for t in expected]
        assert [vocabulary[i] for i in ids.tolist()] == [t for doc in expected for t in doc]


def test_elastic_english_preset_uses_lucene_stopwords_and_porter():
    config = RetrieverConfig(**bm25_preset("elastic-english"))
    analyzer = Analyzer(config.stemmer, config.stopwords)
    assert analyzer.terms("Which of these was the generously running") == ["which", "gener", "run"]
    with pytest.raises(ValueError, match="unknown BM25 preset 'es'"):
        bm25_preset("es")


def test_synthetic_corpus_is_deterministic_and_fits_the_real_statistics(tmp_path):
    stats = fit_statistics(demo_corpus_path())
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    described = write_synthetic_tsv(a, 500, stats, seed=3, progress=False)
    write_synthetic_tsv(b, 500, stats, seed=3, progress=False)
    assert a.read_bytes() == b.read_bytes() and count_passages(a) == 500
    assert described["word_model"]["s_tail"] == pytest.approx(1 / stats.heaps_beta, rel=1e-3)
    passages = list(read_corpus(a))
    lengths = [len(p.text.split()) for p in passages]
    assert set(lengths) <= set(stats.lengths) | {1} and passages[-1].id == "500"


KILLED_GENERATION = textwrap.dedent("""
    import os, signal, sys
    from dynaprag.retrieval import demo_corpus_path, synthetic

    synthetic.GENERATION_CHUNK = 100
    save, calls = synthetic.atomic_write_json, []

    def dying(path, data):
        save(path, data)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    synthetic.atomic_write_json = dying
    synthetic.write_synthetic_tsv(sys.argv[1], 1000, synthetic.fit_statistics(demo_corpus_path()), progress=False)
""")


def test_synthetic_generation_resumes_after_kill_9(tmp_path, monkeypatch):
    import dynaprag.retrieval.synthetic as synthetic

    killed = tmp_path / "killed.tsv"
    proc = subprocess.run([sys.executable, "-c", KILLED_GENERATION, str(killed)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not killed.exists() and json.loads((tmp_path / "killed.tsv.partial.json").read_text())["chunks"] == 3
    monkeypatch.setattr(synthetic, "GENERATION_CHUNK", 100)
    stats = fit_statistics(demo_corpus_path())
    write_synthetic_tsv(killed, 1000, stats, progress=False)
    write_synthetic_tsv(tmp_path / "straight.tsv", 1000, stats, progress=False)
    assert killed.read_bytes() == (tmp_path / "straight.tsv").read_bytes()
    assert not list(tmp_path.glob("*.partial*"))


def test_index_cli_builds_out_of_core_shows_info_and_searches_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAPRAG_CACHE", str(tmp_path / "cache"))
    corpus = write_jsonl(tmp_path / "flash.jsonl", FLASHRAG)
    runner = CliRunner()
    built = runner.invoke(app, ["index", "build", "--corpus", str(corpus), "--index-dir", str(tmp_path / "idx"),
                                "--layout", "disk", "--chunk-size", "1", "--preset", "elastic-english"])
    assert built.exit_code == 0, built.output
    info = runner.invoke(app, ["index", "info", "--index-dir", str(tmp_path / "idx")])
    assert info.exit_code == 0 and '"layout": "disk"' in info.output and '"stemmer": "porter"' in info.output
    found = runner.invoke(app, ["index", "search", "brother of Moses", "--index-dir", str(tmp_path / "idx"), "-k", "1"])
    assert found.exit_code == 0 and "Aaron" in found.output
    missing = runner.invoke(app, ["index", "search", "x", "--index-dir", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "is not a dynaprag index" in " ".join(missing.output.split())
    bad = runner.invoke(app, ["index", "build", "--corpus", str(corpus), "--layout", "ram"])
    assert bad.exit_code == 2 and "unknown BM25 index layout 'ram'" in bad.output
    assert np.load(tmp_path / "idx" / "passages.offsets.npy").tolist()[0] == 0
