"""DRAGIN's RIND as the reference code computes it (oneal2000/DRAGIN @4d71efc, ``src/generate.py``).

The paper (Su et al. 2024, Eq. 4) scores a token by ``S_RIND(t_i) = H_i · a_max(i) · s_i``. The
code that produced the paper's tables (the ``dragin`` method of ``AttnWeightRAG``) computes
something else, reproduced here step by step so that a preset named ``dragin`` decides what
the reference decides:

1. :func:`token_entropies` -- ``BasicGenerator.generate_attn``: Shannon entropy (nats) of
   ``softmax(scores)`` at each generated step, with ``+1e-10`` inside the log.
2. :func:`attention_received` -- ``generate_attn``: last-layer attention of a *second* forward
   pass over the generated tokens alone (no prompt); per head the max over query rows, the
   diagonal included, then the mean over heads. Every later row attends strongly to the first
   generated token (an attention sink), so the first word scores high.
3. :func:`word_signals` -- ``generate_attn``: tokens are merged into words at the tokenizer's
   space marker (``▁`` for Llama-2, ``Ġ`` for SmolLM2/GPT-2 BPE) or the newline id; a word's
   attention is the *sum* over its tokens, its entropy the *mean*.
4. :func:`sentence_spans` and :func:`sentence_rind` -- ``AttnWeightRAG.modifier``: per spaCy
   sentence ``value_w = a_w / Σ_s a · H_w · n_words`` (the sentence's mean value is its mean
   entropy, so θ is on the entropy scale).
5. :func:`rind_decision` -- ``modifier``: the first sentence with any ``value > θ`` fires; the
   whole sentence is discarded. With ``check_real_words`` the non-content words' hits are
   zeroed *after* the decision (the decision stands even if no hit is left).
6. :func:`real_words_query` -- ``AttnWeightRAG.keep_real_words``: the query from a fresh pass
   over ``question + text + kept sentences + the discarded sentence's words``.

Every function takes what a decoding loop has (token pieces, ids, logits, attention tensors,
text) and loads nothing except spaCy through :mod:`dynaprag.nlp`. Reference quirks are listed
in each docstring; the parity tests (``tests/comparison/test_dragin.py``) pin them against
``../shared/parity/dragin.json``.

>>> words = word_signals(["ĠThe", "Ġcat", "Ġsat", "."], [1, 2, 3, 4], [1.0, 0.2, 0.1, 0.3],
...                      [0.5, 2.0, 1.0, 1.0], space_marker="Ġ", newline_id=198)
>>> words.words, [round(a, 2) for a in words.attention]
(['The', 'cat', 'sat.'], [1.0, 0.2, 0.4])
>>> [round(v, 2) for v in sentence_rind(words.attention, words.entropy)]
[0.94, 0.75, 0.75]
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

from dynaprag import nlp

LLAMA_EOS_PIECE = "</s>"
"""The literal end-of-sequence piece ``generate_attn`` tests (Llama-2's; never seen with SmolLM2)."""


class WordSignals(NamedTuple):
    """Per-word output of ``generate_attn``: the words (space marker removed), their inclusive
    token ranges, summed attention and mean entropy."""

    words: list[str]
    ranges: list[tuple[int, int]]
    attention: list[float]
    entropy: list[float]


class SentenceRind(NamedTuple):
    """One spaCy sentence as ``modifier`` scores it: its word span ``[start, end)`` and values."""

    index: int
    sentence: str
    start: int
    end: int
    values: list[float]


class RindDecision(NamedTuple):
    """What ``modifier`` returns, plus the scores that led to it.

    ``fired`` -- any word of some sentence above θ; ``sentence_index`` -- that sentence;
    ``prev_text`` -- the sentences before it joined by spaces (``""`` for the first; the whole
    text when nothing fired); ``curr_words`` -- the firing sentence's words; ``hits`` -- 0/1 per
    word of it, after the real-words filter; ``sentences`` -- every sentence scored.
    """

    fired: bool
    sentence_index: int | None
    prev_text: str
    curr_words: list[str] | None
    hits: list[int] | None
    sentences: list[SentenceRind]


class KeptRealWords(NamedTuple):
    """``keep_real_words``' query and its intermediate values (for traces and parity tests)."""

    query: str
    words: list[str]
    ranges: list[tuple[int, int]]
    curr_start: int
    forward_attention: list[float]
    real_pairs: list[tuple[float, str, int]]
    chosen: list[int] = []  # indices into ``words``/``ranges`` of the query's words, in text order


def token_entropies(logits: torch.Tensor) -> torch.Tensor:
    """Entropy per generated step, ``H_i = -Σ_v p_v log(p_v + 1e-10)`` with ``p = softmax(logits)``.

    DRAGIN Eq. (2); reference ``generate.py`` ``BasicGenerator.generate_attn`` (``use_entropy``).
    ``logits`` is ``[n, vocab]``: one row per generated token, the scores that chose it. The
    reference applies ``scipy.special.softmax`` to ``outputs.scores`` in float32 and adds
    ``1e-10`` inside the log; the same float32 numpy arithmetic is used here because
    near-deterministic steps (H ≈ 0.01) lose their 4th digit under a different softmax.
    """
    x = logits.detach().float().cpu().numpy()
    shifted = np.exp(x - np.amax(x, axis=-1, keepdims=True))
    probs = shifted / np.sum(shifted, axis=-1, keepdims=True)
    return torch.from_numpy(-np.sum(probs * np.log(probs + 1e-10), axis=-1))


def attention_received(attention: torch.Tensor) -> torch.Tensor:
    """Per token, the max attention any query row pays it per head, averaged over heads.

    Reference ``generate_attn`` with its default ``solver="max"``: ``attention`` is the last
    layer's ``[heads, n, n]`` from a forward pass over the generated tokens alone;
    ``max`` over query rows (dim 1) -- the diagonal included, so token 0 gets 1.0 from its
    own row -- then ``mean`` over heads. (The paper's Eq. 3 takes the max over strictly later
    tokens of the head-averaged attention; see :func:`max_attention_received`.)
    """
    return attention.float().max(dim=1).values.mean(dim=0)


def word_ranges(pieces: Sequence[str], ids: Sequence[int], *, space_marker: str, newline_id: int,
                boundary_after: str | None = LLAMA_EOS_PIECE) -> list[tuple[int, int]]:
    """Inclusive token ranges ``[first, last]`` of the words, as ``generate_attn`` merges tokens.

    A new word starts at token 0, at a piece starting with ``space_marker``, at the newline id,
    or after a ``boundary_after`` piece (``generate_attn`` tests ``"</s>"``; ``keep_real_words``
    has no such rule: pass ``None``). The reference hard-codes ``▁`` for ``model_type ==
    "llama"`` and newline id 13 (Llama-2); the parity fixture patches both to the tokenizer's
    own marker and newline id, which is what the caller passes here (a byte-level BPE model
    that reports ``llama`` would otherwise merge the whole continuation into one word).
    """
    ranges: list[list[int]] = []
    for i, piece in enumerate(pieces):
        starts = (i == 0 or piece.startswith(space_marker) or int(ids[i]) == newline_id
                  or (boundary_after is not None and pieces[i - 1] == boundary_after))
        if starts:
            ranges.append([i, i])
        else:
            ranges[-1][1] += 1
    return [(a, b) for a, b in ranges]


def word_signals(pieces: Sequence[str], ids: Sequence[int], attention: Sequence[float] | torch.Tensor,
                 entropies: Sequence[float] | torch.Tensor, *, space_marker: str,
                 newline_id: int) -> WordSignals:
    """``generate_attn``'s words: merged pieces, summed attention, mean entropy.

    ``pieces`` are ``convert_ids_to_tokens`` of the generated ids, ``attention`` the output of
    :func:`attention_received`, ``entropies`` of :func:`token_entropies`. Quirks kept: only the
    space marker is removed from a word, so a newline piece stays inside it (``"ĊQuestion:"``)
    and punctuation stays attached (``"consultant."``); if the first piece is ``"</s>"`` the
    attention is divided by the sum over the other tokens (a Llama-2-only branch).
    """
    att = torch.as_tensor(attention, dtype=torch.float32)
    ent = [float(v) for v in entropies]
    if att.shape[0] > 1 and pieces[0] == LLAMA_EOS_PIECE:
        att = att / att[1:].sum()
    ranges = word_ranges(pieces, ids, space_marker=space_marker, newline_id=newline_id)
    words = ["".join(pieces[a:b + 1]).replace(space_marker, "") for a, b in ranges]
    word_att = [float(att[a:b + 1].sum()) for a, b in ranges]
    word_ent = [sum(ent[a:b + 1]) / (b - a + 1) for a, b in ranges]
    return WordSignals(words, ranges, word_att, word_ent)


def sentence_spans(sentences: Sequence[str], words: Sequence[str]) -> list[tuple[int, int]]:
    """The word span ``[start, end)`` that ``modifier`` assigns to each sentence.

    Sentence ``i`` (not the last) ends at the first ``j`` such that it is a substring of
    ``" ".join(words[start:j])``, searched for ``j < len(words)``; the last sentence runs to
    the end of the words. Reference quirks kept: a sentence that is never found gets an empty
    span, and the next sentence starts at the same word and absorbs its words. That happens to
    every spaCy sentence containing ``"\\n"``: the words carry a newline as the piece character
    (``Ċ``), so their space-joined text never contains it.
    """
    spans = []
    start = 0
    for index, sent in enumerate(sentences):
        if index == len(sentences) - 1:
            spans.append((start, len(words)))
            continue
        end = start
        for j in range(start + 1, len(words)):
            if sent in " ".join(words[start:j]):
                end = j
                break
        spans.append((start, end))
        start = end
    return spans


def sentence_rind(attention: Sequence[float], entropy: Sequence[float]) -> list[float]:
    """RIND values of one sentence's words: ``a_w / Σ a · H_w · n`` (``modifier``).

    This is what the reference computes in place of the paper's Eq. (4) ``H_i · a_max(i) · s_i``:
    word units, attention normalised over the sentence, times the sentence length, and no
    stop-word factor ``s_i``.

    ``attention`` and ``entropy`` are the words' values from :func:`word_signals`; ``n`` is the
    number of words. The sentence-normalised attention times ``n`` has mean 1, so the values
    are entropies reweighted by attention. An all-zero attention gives NaN (never fires), as
    numpy does in the reference.
    """
    n = len(attention)
    if n == 0:
        return []
    total = math.fsum(float(a) for a in attention)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.asarray(attention, dtype=np.float64) / total
    return [float(norm[i] * float(entropy[i]) * n) for i in range(n)]


def rind_per_sentence(sentences: Sequence[str], words: Sequence[str], attention: Sequence[float],
                      entropy: Sequence[float]) -> list[SentenceRind]:
    """Every sentence with its word span (:func:`sentence_spans`) and RIND values.

    ``sentences`` are the spaCy sentences of the continuation (:func:`dynaprag.nlp.sentences`).
    """
    out = []
    for index, ((start, end), sent) in enumerate(zip(sentence_spans(sentences, words), sentences)):
        values = sentence_rind(attention[start:end], entropy[start:end])
        out.append(SentenceRind(index, sent, start, end, values))
    return out


def real_word_hits(sentence: str, words: Sequence[str], hits: Sequence[int]) -> list[int]:
    """``modifier``'s check_real_words filter: keep a hit only if the word contains a real word.

    The real words are the NOUN/ADJ/VERB/PROPN/NUM tokens of the spaCy parse of the
    *sentence*; matching is by substring (:func:`dynaprag.nlp.contains_real_word`).
    """
    real = nlp.real_words(sentence)
    return [int(h) if h and nlp.contains_real_word(w, real) else 0 for w, h in zip(words, hits)]


def rind_decision(text: str, words: Sequence[str], attention: Sequence[float], entropy: Sequence[float],
                  threshold: float, check_real_words: bool = True) -> RindDecision:
    """DRAGIN's retrieval decision over a look-ahead continuation (``AttnWeightRAG.modifier``).

    ``text`` is the decoded continuation; ``words``, ``attention``, ``entropy`` come from
    :func:`word_signals`. Sentences (spaCy) are scored in order; the first with any value
    ``> threshold`` fires. Reference quirks kept: no stop-word gate enters the decision
    (``check_real_words`` only zeroes hits afterwards, and the sentence fires even when no hit
    survives); ``prev_text`` re-joins the *stripped* spaCy sentences with single spaces.
    The reference configs use θ = 0.8 (HotpotQA) and 1.0 (2Wiki), tuned for Llama-2-7B.
    """
    sentences = nlp.sentences(text)
    scored: list[SentenceRind] = []
    for item in rind_per_sentence(sentences, words, attention, entropy):
        scored.append(item)
        hits = [1 if v > threshold else 0 for v in item.values]
        if 1 in hits:
            curr = list(words[item.start:item.end])
            if check_real_words:
                hits = real_word_hits(item.sentence, curr, hits)
            prev = "" if item.index == 0 else " ".join(sentences[:item.index])
            return RindDecision(True, item.index, prev, curr, hits, scored)
    return RindDecision(False, None, text, None, None, scored)


def real_words_query_text(question: str, text: str, kept_text: str, curr_words: Sequence[str]) -> str:
    """The string ``keep_real_words`` re-encodes: ``question, text, kept sentences, curr words``.

    ``AttnWeightRAG.inference`` passes ``prev_text = question + " " + text + " " + ptext`` and
    ``keep_real_words`` appends ``" " + " ".join(curr_tokens)``; no few-shot prompt. Quirk kept:
    empty parts still contribute their separating spaces (``"question?   Aladin was ..."``),
    and the discarded sentence is re-spelled from its words joined by single spaces.
    """
    prev_text = question + " " + text + " " + kept_text
    return prev_text + " " + " ".join(curr_words)


def real_words_rows(pieces: Sequence[str], ids: Sequence[int], hits: Sequence[int], *, space_marker: str,
                    newline_id: int) -> list[int]:
    """The attention rows :func:`real_words_query` reads: row ``i - 1`` for each token ``i`` of a hit word.

    Only the hit words' rows enter the query, so a forward pass need compute no other row
    (:meth:`~dynaprag.lm.generator.Generator.attention_of` with ``rows``): the memory of the
    query's attention pass grows with the hit words times the text, not with the text squared.
    """
    ranges = word_ranges(pieces, ids, space_marker=space_marker, newline_id=newline_id, boundary_after=None)
    curr_start = len(ranges) - len(hits)
    rows: set[int] = set()
    for offset, hit in enumerate(hits):
        if hit == 1 and 0 <= curr_start + offset < len(ranges):
            a, b = ranges[curr_start + offset]
            rows.update(i - 1 for i in range(max(a, 1), b + 1))
    return sorted(rows)


def real_words_query(all_text: str, pieces: Sequence[str], ids: Sequence[int], attention: torch.Tensor,
                     hits: Sequence[int], top_k: int, *, space_marker: str, newline_id: int,
                     rows: Sequence[int] | None = None) -> KeptRealWords:
    """DRAGIN's query (QFS): the real words the hit words attend to most, in text order.

    Reference ``AttnWeightRAG.keep_real_words``. ``all_text`` is :func:`real_words_query_text`,
    ``pieces``/``ids`` its tokenisation (``tokenizer.encode``, ``convert_ids_to_tokens``) and
    ``attention`` the last layer's ``[heads, n, n]`` from a forward pass over ``ids`` alone, or
    only its ``rows`` (``[heads, len(rows), n]``, at least :func:`real_words_rows`);
    ``hits`` are the firing sentence's word hits (:attr:`RindDecision.hits`).

    Steps: pieces are merged into words (space marker or newline id; no ``"</s>"`` rule); the
    head-averaged attention is read, for each token ``i`` of word ``w``, on row ``i - 1`` (the
    position that predicted it) over the tokens before ``w``, renormalised to sum 1, averaged
    over ``w``'s tokens and summed per preceding word; the rows of all hit words are averaged
    (``forward_attention``). Candidates are words that contain a real word of the spaCy parse
    of ``all_text`` (substring match) and are not themselves hits; the ``top_k`` highest (a
    stable sort, so ties keep text order) are joined by spaces in text order. HotpotQA uses
    ``top_k`` 35, 2Wiki 25. Quirks kept: the curr words are located by counting back
    ``len(hits)`` words from the end of the re-tokenised text; words keep punctuation
    (``"consultant?"``); with no hit left the mean is 0/0 = NaN and the sort keeps text order.
    Only the hit words' attention is computed (the reference computes every word's and reads
    the hit words'): the same values, without a cost quadratic in the text.
    """
    ranges = word_ranges(pieces, ids, space_marker=space_marker, newline_id=newline_id, boundary_after=None)
    words = ["".join(pieces[a:b + 1]).replace(space_marker, "") for a, b in ranges]
    curr_start = len(words) - len(hits)
    n = len(ids)
    row_index = {r: j for j, r in enumerate(range(n) if rows is None else rows)}
    attention = attention.float()

    def word_row(a: int, b: int) -> torch.Tensor:
        row = torch.zeros(n)
        for i in range(max(a, 1), b + 1):
            before = torch.mean(attention[:, row_index[i - 1]], dim=0)[:a]  # the head mean of one row
            row[:a] += before / before.sum()
        row /= (b - a + 1)
        return torch.tensor([row[c:d + 1].sum() for c, d in ranges])

    forward = torch.zeros(len(words))
    hit_count = 0
    for i, hit in enumerate(hits):
        if hit == 1:
            forward += word_row(*ranges[curr_start + i])
            hit_count += 1
    forward = (forward / hit_count).tolist()

    real = nlp.real_words(all_text)
    pairs = [(forward[i], word, i) for i, word in enumerate(words)
             if not (i >= curr_start and hits[i - curr_start]) and nlp.contains_real_word(word, real)]
    keep = min(top_k, len(pairs))
    chosen = sorted(sorted(pairs, key=lambda p: p[0], reverse=True)[:keep], key=lambda p: p[2])
    return KeptRealWords(" ".join(p[1] for p in chosen), words, ranges, curr_start, forward, pairs,
                          [p[2] for p in chosen])


# The paper's printed Eq. 3-4 per token (dragin-paper, dragin-inline), beside the reference's above.
def max_attention_received(attention: torch.Tensor) -> torch.Tensor:
    """DRAGIN's ``a_max(i) = max_{j>i} A_{j,i}``: the largest attention any *later* token pays to ``i``.

    ``attention`` is a square ``[n, n]`` matrix whose row ``j`` is how token ``j`` attends to
    tokens ``0..n-1`` (rows are causal, so only ``i < j`` matters). The last token has no later
    token and scores 0.
    """
    n = attention.shape[0]
    strictly_later = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)  # j > i
    masked = torch.where(strictly_later, attention.float(), torch.zeros((), dtype=torch.float32))
    return masked.max(dim=0).values if n else masked.new_zeros(0)


def rind_scores(entropies: torch.Tensor, attention_max: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """DRAGIN's RIND, Eq. (4): ``S_RIND(t_i) = H_i · a_max(i) · s_i``.

    ``H_i`` token entropy (Eq. 2), ``a_max(i)`` the maximum attention later tokens pay to it
    (Eq. 3), ``s_i`` 1 for content words and 0 for stop words. Retrieval fires when ``S > θ``.
    """
    return entropies.float() * attention_max.float() * content.float()
