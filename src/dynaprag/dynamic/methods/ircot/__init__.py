"""IRCoT (Trivedi et al. 2023) as its reference code runs it: retrieval interleaved with chain-of-thought.

* :mod:`.components` -- the ``ircot`` trigger (with its reader), the ``ircot-sentence`` query and
  the ``ircot-paragraphs`` selector, the reference's pure rules, and every deviation;
* :data:`PRESETS` -- ``ircot``, ``ircot-noreader``, registered in ``METHODS`` by
  :mod:`dynaprag.dynamic.methods`.
"""
from __future__ import annotations

from dynaprag.dynamic.method import MethodSpec
from dynaprag.dynamic.methods.ircot import components as _components  # noqa: F401 - registers them

PRESETS: dict[str, MethodSpec] = {
    "ircot": MethodSpec(
        "ircot", "ircot-sentence", "ircot-paragraphs",
        paper="IRCoT QA as its reference code runs it (Trivedi et al. 2023; StonyBrookNLP/ircot @3c1820f, ircot_qa "
              "configs): a query per chain sentence, K=6 paragraphs each, up to 15 collected, exit at 'answer is' or "
              "10 sentences, then a reader; deviations in dynaprag.dynamic.methods.ircot"),
    "ircot-noreader": MethodSpec(
        "ircot", "ircot-sentence", "ircot-paragraphs", knobs={"trigger": {"reader": False}},
        paper="variant: IRCoT's retrieval chain, the answer read from the chain itself (no reader step)"),
}
