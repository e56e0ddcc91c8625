"""The Lucene backend: a real Lucene index (pyserini's Anserini in the JVM) built, then opened by path.

The JVM tests skip when the backend is not installed (`make lucene`: Debian's JDK + pyserini);
the stored-document parsing and the settings checks run everywhere.
"""
from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from dynaprag.retrieval import RetrieverConfig, build_retriever
from dynaprag.retrieval.lucene import analyzer_settings, document_passage, is_lucene_index

FIXTURE = [
    {"id": "p1", "title": "Lake Baikal", "text": "Lake Baikal in Siberia is the deepest lake in the world."},
    {"id": "p2", "title": "Siberia", "text": "Siberia is a vast region of Russia east of the Ural Mountains."},
    {"id": "p3", "title": "Ural Mountains",
     "text": "The Ural Mountains run from north to south through western Russia."},
    {"id": "p4", "title": "Mount Kilimanjaro", "text": "Kilimanjaro is a dormant volcano in Tanzania, the highest "
                                                       "mountain in Africa."},
    {"id": "p5", "title": "Tanzania", "text": "Tanzania is a country in East Africa whose capital is Dodoma."},
    {"id": "p6", "title": "Violin", "text": "The violin is a wooden string instrument played with a bow."},
    {"id": "p7", "title": "Antonio Stradivari", "text": "Antonio Stradivari was an Italian luthier famous for his "
                                                        "violins, made in Cremona."},
    {"id": "p8", "title": "Cremona", "text": "Cremona is a city in Lombardy, northern Italy, on the left bank of the "
                                             "Po river."},
    {"id": "p9", "title": "Espresso",
     "text": "Espresso is coffee brewed by forcing hot water through finely ground beans."},
    {"id": "p10", "title": "Photosynthesis", "text": "Photosynthesis lets plants turn light, water and carbon dioxide "
                                                     "into sugar."},
]
QUERIES = ["Who made violins in Cremona?", "deepest lake in Siberia", "capital of Tanzania",
           "highest mountain in Africa", "how is espresso brewed", "mountains in western Russia"]


def lucene_installed() -> bool:
    return bool(importlib.util.find_spec("pyserini") and importlib.util.find_spec("jnius")
                and (shutil.which("java") or __import__("os").environ.get("JAVA_HOME")))


needs_lucene = pytest.mark.skipif(not lucene_installed(), reason="Lucene backend not installed: `make lucene` "
                                  "(Debian's openjdk-17-jdk-headless + pip install 'dynaprag[lucene]')")


def test_document_passage_reads_pyserini_and_our_layouts():
    raw = json.dumps({"id": "7", "contents": "Aaron\nAaron is a prophet."})
    assert document_passage("7", raw, None).title == "Aaron"
    assert document_passage("7", raw, None).text == "Aaron is a prophet."
    both = json.dumps({"id": "7", "title": "T", "text": "body"})
    assert (document_passage("7", both, None).title, document_passage("7", both, None).text) == ("T", "body")
    assert document_passage("7", None, "no title here").text == "no title here"
    assert document_passage("7", "not json", None).text == "not json"


def test_analyzer_settings_name_a_bad_value(tmp_path):
    assert analyzer_settings()["stemmer"] == "porter"
    with pytest.raises(ValueError, match="lucene_stemmer"):
        analyzer_settings("english")
    with pytest.raises(ValueError, match="lucene_stopwords"):
        analyzer_settings("porter", "en")
    assert not is_lucene_index(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not lucene_installed():
        pytest.skip("Lucene backend not installed: `make lucene`")
    root = tmp_path_factory.mktemp("lucene")
    corpus = root / "fixture.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in FIXTURE), encoding="utf-8")
    config = RetrieverConfig(backend="lucene", corpus=str(corpus), index_dir=str(root / "index"), cache=False)
    retriever = build_retriever(config, progress=False)
    return corpus, root / "index", retriever


@needs_lucene
def test_lucene_index_opens_by_path_and_ranks(built, tmp_path):
    corpus, folder, retriever = built
    assert retriever.meta["num_passages"] == len(FIXTURE)
    assert retriever.meta["settings"]["analyzer"] == {"analyzer": "DefaultEnglishAnalyzer", "stemmer": "porter",
                                                      "stopwords": "lucene"}
    # an index made elsewhere (no dynaprag meta.json), e.g. a pyserini prebuilt one, opens by path alone
    foreign = tmp_path / "prebuilt"
    shutil.copytree(folder, foreign, ignore=shutil.ignore_patterns("meta.json", "write.lock"))
    opened = build_retriever(RetrieverConfig(backend="lucene", index_dir=str(foreign), cache=False))
    assert opened.num_docs == len(FIXTURE)
    hits = opened.search(QUERIES, 3)
    assert [h[0].id for h in hits] == ["p7", "p1", "p5", "p4", "p9", "p3"]
    top = hits[0][0]
    assert (top.title, top.text) == (FIXTURE[6]["title"], FIXTURE[6]["text"])
    assert all(a.score >= b.score for row in hits for a, b in zip(row, row[1:]))
    assert [[h.id for h in row] for row in retriever.search(QUERIES, 3)] == [[h.id for h in row] for row in hits]
    threaded = build_retriever(RetrieverConfig(backend="lucene", index_dir=str(foreign), lucene_threads=2,
                                               cache=False))
    assert [[(h.id, h.score) for h in row] for row in threaded.search(QUERIES, 3)] == \
        [[(h.id, h.score) for h in row] for row in hits]
    with pytest.raises(ValueError, match="k"):
        opened.search(QUERIES, 0)


@needs_lucene
def test_lucene_agrees_with_the_elastic_english_preset(built, tmp_path):
    from dynaprag.retrieval.bm25_presets import bm25_preset

    corpus, _, lucene = built
    ours = build_retriever(RetrieverConfig(backend="bm25", corpus=str(corpus), index_dir=str(tmp_path / "bm25"),
                                           cache=False, **bm25_preset("elastic-english")), progress=False)
    assert [[h.id for h in row] for row in ours.search(QUERIES, 1)] == \
        [[h.id for h in row] for row in lucene.search(QUERIES, 1)]


@needs_lucene
def test_lucene_refuses_another_analyzer_and_a_folder_that_is_no_index(built, tmp_path):
    _, folder, _ = built
    with pytest.raises(ValueError, match="analyzer"):
        build_retriever(RetrieverConfig(backend="lucene", index_dir=str(folder), lucene_stemmer="none", cache=False))
    with pytest.raises(FileNotFoundError, match="not a Lucene index"):
        build_retriever(RetrieverConfig(backend="lucene", index_dir=str(tmp_path), cache=False))


@needs_lucene
def test_cli_searches_a_lucene_index_by_path(built):
    from typer.testing import CliRunner

    from dynaprag.cli import app

    _, folder, _ = built
    result = CliRunner().invoke(app, ["search", "Who made violins in Cremona?", "--backend", "lucene",
                                      "--index-dir", str(folder), "-k", "2"])
    assert result.exit_code == 0, result.output
    assert "Antonio Stradivari" in result.output
