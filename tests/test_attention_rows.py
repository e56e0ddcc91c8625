"""The bounded attention pass (issue 27, item 1) is bit-for-bit the eager pass it replaces.

DRAGIN's attention passes used to run the whole model eager with ``output_attentions`` (memory
``layers · heads · n²``: a 7k-token question grew a server to 18.7 GB). Now only the rows a
component reads are computed, in chunks (:mod:`dynaprag.lm.attention`). These tests pin that
nothing a component reads changed: the rows equal eager's exactly, on the real model, and
DRAGIN's query built from the hit rows alone equals the one built from the full matrix on the
reference fixture's inputs.
"""
from __future__ import annotations

import torch

from dynaprag.dynamic.methods.dragin import rind

TEXT = ("Aladin is a 2009 Indian fantasy film directed by Prabhu Deva. Who directed it, and when "
        "was the director born? The film stars Amitabh Bachchan and Riteish Deshmukh. ") * 3


def _eager_last_layer(lm, ids: list[int]) -> torch.Tensor:
    model = lm.model
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(torch.tensor([ids]), output_attentions=True).attentions[-1][0].float()
    finally:
        model.set_attn_implementation(before)


def test_attention_rows_equal_eager_bit_for_bit(generator, lm):
    ids = generator.encode(TEXT)
    assert len(ids) > 130  # more than two chunks of 64 rows
    eager = _eager_last_layer(lm, ids)
    assert torch.equal(generator.attention_of(ids), eager)
    rows = [0, 5, 64, 65, len(ids) - 1]
    picked = generator.attention_of(ids, rows)
    assert picked.shape == (eager.shape[0], len(rows), len(ids))
    assert torch.equal(picked, eager[:, rows])


def test_attention_pass_leaves_the_model_as_it_was(generator, lm):
    """The per-layer switch is undone: the next decoding pass runs the model's own attention."""
    ids = generator.encode("The capital of France is")
    state = generator.start(ids)
    before = generator.next_logprobs(state).clone()
    generator.attention_of(ids, [len(ids) - 1])
    layers = lm.model.model.layers
    assert all(layer.self_attn.config._attn_implementation == lm.model.config._attn_implementation
               for layer in layers)
    assert not any(hasattr(layer.self_attn, "_dynaprag_rows") for layer in layers)
    assert torch.equal(generator.next_logprobs(generator.start(ids)), before)


def test_real_words_query_from_hit_rows_equals_full_matrix(generator, lm):
    """DRAGIN's query reads only the hit words' rows; giving it only those rows changes nothing."""
    question = "Who directed the film Aladin, and when was the director born?"
    curr = ["The", "film", "was", "directed", "by", "Prabhu", "Deva."]
    hits = [0, 1, 0, 1, 0, 1, 1]
    text = rind.real_words_query_text(question, "", "Aladin is a 2009 Indian fantasy film.", curr)
    ids = generator.encode(text)
    pieces = generator.pieces(ids)
    marks = {"space_marker": generator.space_marker, "newline_id": generator.newline_id}
    full = rind.real_words_query(text, pieces, ids, _eager_last_layer(lm, ids), hits, 5, **marks)
    rows = rind.real_words_rows(pieces, ids, hits, **marks)
    assert 0 < len(rows) < len(ids)
    bounded = rind.real_words_query(text, pieces, ids, generator.attention_of(ids, rows), hits, 5, rows=rows,
                                    **marks)
    assert bounded.query == full.query
    assert bounded.forward_attention == full.forward_attention
    assert bounded.real_pairs == full.real_pairs


def test_the_chunk_size_changes_nothing(generator, lm):
    """Rows are computed a chunk at a time; the chunk size is a memory knob, not a numerical one."""
    ids = generator.encode(TEXT)
    rows = list(range(0, len(ids), 7))

    def pass_with(chunk_rows):
        with generator._rows.reading(rows, chunk_rows=chunk_rows) as request:
            generator.model(input_ids=torch.tensor([ids]), use_cache=False, logits_to_keep=1)
        return request.weights

    assert torch.equal(pass_with(16), pass_with(None)) and torch.equal(pass_with(1000), pass_with(None))
