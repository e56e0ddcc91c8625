"""DRAGIN parity: :mod:`dynaprag.dynamic.methods.dragin.rind` against ``dragin.json``.

The fixture was produced by oneal2000/DRAGIN @4d71efc ``src/generate.py`` itself
(``generate_attn``, ``AttnWeightRAG.modifier``, ``keep_real_words``) on SmolLM2-135M, float32,
eager attention, with the tokenizer's own space marker ``Ġ`` and newline id 198 patched in.
Each stage is tested twice where it can be: from the fixture's recorded inputs (pure
functions, no model), and end to end from our own forward passes of the same model.
"""
from __future__ import annotations

import pytest
import torch

from dynaprag import nlp
from dynaprag.dynamic.methods.dragin import rind

from .parity import assert_close, load, params

FIXTURE = "dragin.json"
QUESTIONS = params(FIXTURE, lambda d: d["questions"], lambda q: f"{q['dataset']}-{q['id'][:8]}")
RUNS = params(FIXTURE, lambda d: [(q, r) for q in d["questions"] for r in q["runs"]],
              lambda qr: f"{qr[0]['dataset']}-{qr[0]['id'][:8]}-t{qr[1]['threshold']}-k{qr[1]['retrieve_keep_top_k']}")


def _marker() -> dict:
    meta = load(FIXTURE)["meta"]
    return {"space_marker": meta["space_token"], "newline_id": meta["newline_id"]}


def _words(q: dict) -> rind.WordSignals:
    return rind.word_signals(q["continuation_tokens"], q["continuation_ids"], q["token_attn_max_mean"],
                             q["token_entropies"], **_marker())


@pytest.fixture(scope="module")
def passes(eager_lm):
    """Per question: our last-layer attention over the continuation alone, and the logits that
    chose each continuation token (one teacher-forced pass over prompt + continuation, which
    equals greedy ``generate``'s scores up to float rounding)."""
    model = eager_lm.model
    out = {}
    with torch.no_grad():
        for q in load(FIXTURE)["questions"]:
            cont = torch.tensor([q["continuation_ids"]])
            attention = model(cont, output_attentions=True).attentions[-1][0]
            full = torch.tensor([q["prompt_ids"] + q["continuation_ids"]])
            n_prompt = len(q["prompt_ids"])
            logits = model(full).logits[0, n_prompt - 1:n_prompt - 1 + cont.shape[1]]
            out[q["id"]] = (attention, logits)
    return out


# ---- generate_attn: token signals and words -------------------------------------------------

@pytest.mark.parametrize("q", QUESTIONS)
def test_word_ranges_and_words(q):
    ranges = rind.word_ranges(q["continuation_tokens"], q["continuation_ids"], **_marker())
    assert [list(r) for r in ranges] == q["word_ranges"]
    assert _words(q).words == q["words"]


@pytest.mark.parametrize("q", QUESTIONS)
def test_word_attention_and_entropy_from_token_values(q):
    signals = _words(q)
    assert_close(signals.attention, q["word_attns"], what="word_attns")
    assert_close(signals.entropy, q["word_entropies"], what="word_entropies")


@pytest.mark.slow
@pytest.mark.parametrize("q", QUESTIONS)
def test_token_attention_from_our_forward_pass(q, passes):
    attention, _ = passes[q["id"]]
    assert attention.shape[0] > 1 and attention.shape[1] == len(q["continuation_ids"])
    assert_close(rind.attention_received(attention).tolist(), q["token_attn_max_mean"], what="mean_atten")


@pytest.mark.slow
@pytest.mark.parametrize("q", QUESTIONS)
def test_token_entropy_from_our_logits(q, passes):
    _, logits = passes[q["id"]]
    assert logits.argmax(dim=-1).tolist() == q["continuation_ids"], "not the greedy continuation"
    assert_close(rind.token_entropies(logits).tolist(), q["token_entropies"], what="entropies")


# ---- modifier: sentences, spans, RIND values, decision --------------------------------------

@pytest.mark.parametrize("q", QUESTIONS)
def test_spacy_sentences(q):
    assert nlp.sentences(q["continuation_text"]) == q["spacy_sents"]


@pytest.mark.parametrize("q", QUESTIONS)
def test_rind_per_sentence(q):
    scored = rind.rind_per_sentence(q["spacy_sents"], q["words"], q["word_attns"], q["word_entropies"])
    expected = q["rind_per_sentence"]
    assert [(s.index, s.sentence, s.start, s.end) for s in scored] == \
           [(e["sid"], e["sent"], e["tl"], e["tr"]) for e in expected]
    for s, e in zip(scored, expected):
        assert_close(s.values, e["value"], what=f"sentence {s.index} value")


def test_sentence_with_newline_gets_an_empty_span():
    """Reference quirk (b): a sentence containing "\\n" never matches the space-joined words."""
    words = ["A", "b.", "ĊQuestion:", "c?", "ĊAnswer:", "d.", "E", "f."]
    sents = ["A b.", "Question: c?\nAnswer: d.", "E f."]
    assert rind.sentence_spans(sents, words) == [(0, 2), (2, 2), (2, 8)]


@pytest.mark.parametrize("qr", RUNS)
def test_decision_hits_and_kept_text(qr):
    q, run = qr
    decision = rind.rind_decision(q["continuation_text"], q["words"], q["word_attns"], q["word_entropies"],
                                  run["threshold"], check_real_words=True)
    assert decision.fired == run["hallucination"]
    assert decision.sentence_index == run["modifier_sentence_trace"][-1]["sid"]
    assert decision.prev_text == run["prev_text"]
    assert decision.curr_words == run["curr_tokens"]
    assert decision.hits == run["curr_hit"]
    firing = run["modifier_sentence_trace"][-1]
    assert [1 if v > run["threshold"] else 0 for v in decision.sentences[-1].values] == firing["thres_raw"]


# ---- keep_real_words: the query --------------------------------------------------------------

def _query_inputs(question, prev_text, curr_words, tokenizer):
    text = rind.real_words_query_text(question, "", prev_text, curr_words)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text, ids, tokenizer.convert_ids_to_tokens(ids)


@pytest.fixture(scope="module")
def query_attention(eager_lm):
    """Last-layer attention of a pass over the query text alone, cached per text (the 9 runs of
    a question share a few texts)."""
    cache: dict[tuple[int, ...], torch.Tensor] = {}

    def attention(ids: list[int]) -> torch.Tensor:
        if tuple(ids) not in cache:
            with torch.no_grad():
                cache[tuple(ids)] = eager_lm.model(torch.tensor([ids]), output_attentions=True).attentions[-1][0]
        return cache[tuple(ids)]
    return attention


@pytest.mark.slow
@pytest.mark.parametrize("qr", RUNS)
def test_real_words_query(qr, eager_lm, query_attention):
    q, run = qr
    trace = run["keep_real_words_trace"]
    text, ids, pieces = _query_inputs(q["question"], run["prev_text"], run["curr_tokens"], eager_lm.tokenizer)
    assert text == trace["all_text"]
    assert ids == trace["input_ids"]
    attention = query_attention(ids)
    result = rind.real_words_query(text, pieces, ids, attention, run["curr_hit"], run["retrieve_keep_top_k"],
                                   **_marker())
    assert result.words == trace["words"]
    assert [list(r) for r in result.ranges] == trace["range_"]
    assert result.curr_start == trace["curr_st"]
    assert_close(result.forward_attention, trace["forward_attns"], what="forward_attns")
    assert [(w, i) for _, w, i in result.real_pairs] == [(w, i) for _, w, i in trace["real_pairs"]]
    assert result.query == run["query"]


# ---- end to end: our forward passes -> decision -> query --------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("qr", RUNS)
def test_end_to_end_from_our_forward_passes(qr, eager_lm, passes, query_attention):
    q, run = qr
    attention, logits = passes[q["id"]]
    signals = rind.word_signals(q["continuation_tokens"], q["continuation_ids"], rind.attention_received(attention),
                                rind.token_entropies(logits), **_marker())
    decision = rind.rind_decision(q["continuation_text"], signals.words, signals.attention, signals.entropy,
                                  run["threshold"])
    assert (decision.fired, decision.prev_text, decision.hits) == (run["hallucination"], run["prev_text"],
                                                                   run["curr_hit"])
    text, ids, pieces = _query_inputs(q["question"], decision.prev_text, decision.curr_words, eager_lm.tokenizer)
    query = rind.real_words_query(text, pieces, ids, query_attention(ids), decision.hits, run["retrieve_keep_top_k"],
                                  **_marker()).query
    assert query == run["query"]
