"""Parity with the PRAG reference's training samples (oneal2000/PRAG @e03742e ``encode.get_train_data``).

``../shared/parity/prag_samples.json`` holds the reference's output for one augmented passage
(1 rewrite, 3 QA pairs), with and without ``--with_cot``, on SmolLM2's chat template: per
sample the token ids, their decoded text and the fact that labels are all input ids. We feed
the same inputs to our sample assembly and must get the same ids, text and labels; the
answer-time prompt must be the training prompt without the answer, as in the reference.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynaprag.corpus import Passage
from dynaprag.parametric.augment import Augmentation
from dynaprag.parametric.encode import (PragPromptBuilder, PragTemplate, lm_batch, tokenize_samples,
                                        training_prompts)

from .parity import MISSING

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "parity" / "prag_samples.json"


@pytest.fixture(scope="module")
def fixture() -> dict:
    if not FIXTURE.is_file():
        pytest.skip(f"{MISSING}: {FIXTURE}")
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _augmentation(fixture: dict) -> Augmentation:
    """The fixture's inputs as our augmentation record (no title: the reference's passage is bare text)."""
    inputs, key = fixture["inputs"], fixture["meta"]["augment_model_key"]
    return Augmentation(passage={"id": "p0", "title": "", "text": inputs["passage"]},
                        rewrites=[inputs[f"{key}_rewrite"]], qa=[dict(qa) for qa in inputs[f"{key}_qa"]])


@pytest.mark.parametrize("variant", ["direct", "with_cot"])
def test_training_samples_match_the_reference(fixture, lm, variant):
    expected = fixture["variants"][variant]
    template = PragTemplate(with_cot=expected["with_cot"], fewshot=expected["fewshot_text"] or "")
    prompts = training_prompts(_augmentation(fixture), with_cot=expected["with_cot"])
    samples = tokenize_samples(lm.tokenizer, lm.chat_template, template, prompts,
                               fixture["meta"]["TrainingData_max_length"])
    assert len(samples) == len(expected["samples"]) == 5
    used = {None: "none", fixture["inputs"]["passage"]: "passage"}
    for ids, (question, passages, _), ref in zip(samples, prompts, expected["samples"]):
        assert used.get(passages[0] if passages else None, "rewrite") == ref["passage_used"]
        assert lm.tokenizer.decode(ids) == ref["text"]
        assert ids == ref["input_ids"] and len(ids) == ref["n_tokens"]
        batch = lm_batch(ids)
        assert batch["labels"].tolist() == batch["input_ids"].tolist() == [ref["input_ids"]]  # labels on all ids


@pytest.mark.parametrize("variant", ["direct", "with_cot"])
def test_answer_prompt_is_the_training_prompt_without_the_answer(fixture, lm, variant):
    """The loop's prompt under PRAG: the reference's ``get_prompt`` with no answer (the cue "Answer: ")."""
    expected = fixture["variants"][variant]
    template = PragTemplate(with_cot=expected["with_cot"], fewshot=expected["fewshot_text"] or "")
    builder = PragPromptBuilder(lm.tokenizer, lm.chat_template, template)
    passage = Passage("p0", "", fixture["inputs"]["passage"])
    question = fixture["inputs"][f"{fixture['meta']['augment_model_key']}_qa"][0]["question"]
    for passages in ([passage], []):
        ids = builder.build(question, passages)
        assert ids[: len(builder.prefix_ids)] == builder.prefix_ids
        assert ids == template.ids(lm.tokenizer, lm.chat_template, question, [p.text for p in passages] or None)
        training = expected["samples"][0 if passages else 4]["input_ids"]
        cue = lm.tokenizer.encode(template.assistant(None), add_special_tokens=False)
        if passages:  # the first sample is this question with this passage: same prompt, then the answer
            assert training[: len(ids) - len(cue)] == ids[: -len(cue)]
        text = lm.tokenizer.decode(ids)
        assert text.endswith("<|im_start|>assistant\n" + ("Answer: " if expected["with_cot"] else "The answer is "))
