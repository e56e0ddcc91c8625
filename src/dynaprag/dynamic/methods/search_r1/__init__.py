"""Model-issued search: the model writes ``<search> query </search>`` and the loop answers in kind.

Search-R1 (Jin et al. 2025) and the reinforcement-learned agents that share its shape
(R1-Searcher, Song et al. 2025; ReSearch, Chen et al. 2025) decide when and what to search by
emitting tags -- the "special tokens decide" case of dynamic RAG, trained rather than prompted.
Each checkpoint answers only in the protocol it was trained in, so the protocol (prompt, tags,
block and passage format, top-k, turn and token limits) is a setting, :mod:`.protocol`.

* :mod:`.protocol` -- :class:`~.protocol.SearchProtocol`, its pure text rules, and the three
  protocols read from their reference code at fixed commits;
* :mod:`.builder` -- the prompt with each observation after its turn;
* :mod:`.components` -- the ``model-search`` trigger, ``search-tag`` query, ``search-turns``
  selector and ``information-block`` injector;
* :data:`PRESETS` -- registered in ``METHODS`` by :mod:`dynaprag.dynamic.methods`.

``search-r1`` reproduces the loop that produced the paper's tables (``search_r1/llm_agent/
generation.py`` ``LLMGenerationManager.run_llm_loop``, run by ``scripts/nq_hotpotqa/evaluate.sh``:
``max_turns=4``, ``retriever.topk=3``, ``max_response_length=500``, ``max_obs_length=500``,
greedy validation, ``verl/trainer/ppo/ray_trainer.py:504-519``), file:line of ``generation.py`` at
PeterGriffinJin/Search-R1 @a14dc3a unless named:

1. the prompt is ``make_prefix`` (``scripts/data_process/qa_search_test_merge.py:26-39``) of the
   question stripped and ended with "?" (:75-77), one user message in the chat template when the
   tokenizer has one (``verl/utils/dataset/rl_dataset.py:128-131``), tokenised without special
   tokens (``verl/utils/torch_functional.py:236``);
2. each turn is generated greedily to end of turn or 500 tokens and cut after its first
   ``</search>``, else its first ``</answer>`` (:54-75); the cut text is re-tokenised (:45-52);
3. the action is the first ``<(search|answer)>(.*?)</\\1>`` of the turn, content stripped
   (:407-436); a search appends ``\\n\\n<information>{docs}</information>\\n\\n`` with the top-3
   as ``Doc {i}(Title: {title}) {text}\\n``, stripped (:391, :460-469); an answer ends the
   question; anything else appends the invalid-action message (:396-398) and goes on;
4. an observation is cut to 500 tokens (:87-89); after 4 turns a final turn is generated whose
   search is not run (:278-310);
5. the score reads the last ``<answer>`` of the sequence (``verl/utils/reward_score/qa_em.py:60-78``).

Deviations (each also in the component that holds it):

(a) a turn stops at its first closing tag, ``</search>`` or ``</answer>`` whichever comes first;
    the reference generates on to end of turn and prefers a later ``</search>`` over an earlier
    ``</answer>`` (:61-66); its action is then still the first tag pair, the answer, so only a
    second answer tag between the two would change the score;
(b) the short answer is the last answer tag of the model's turns; the reference's regex runs over
    the whole sequence and needs two matches (its prompt's example ``<answer> Beijing </answer>`` is
    the first), which is the same answer when the model gave one; when it gave none, the reference
    returns the prompt's example, or ``and`` from the retry message's ``<answer> and </answer>``
    (``qa_em.py:60-78``; this scores 0 against any gold answer but "and"), ours "";
(c) a turn that ends with end of turn right after an observation (an empty turn) ends the answer;
    the reference appends another invalid-action message;
(d) the sequence is cut at the model's context (``PromptTooLong``) rather than left-truncated to
    ``max_prompt_length`` 4096 (:107-115); an empty query retrieves nothing (the reference sends
    it to its server);
(e) the run's budgets bind too: ``max_new_tokens`` over all turns and ``max_retrievals``, which
    must be >= ``max_turns`` (the loop's default 5 >= 4);
(f) the passages are the run's retriever's (the paper: e5 over the 2018 Wikipedia dump, whose
    ``contents`` quote the title: ``Doc 1(Title: "Jaws") ...``; here the title as the corpus has it).

``search-r1-prompted`` (variant) runs the same protocol on any instruct model with one worked
trajectory (ours, :data:`~.builder.DEMONSTRATION_TURNS`) shown as an earlier exchange: untrained
models follow the protocol poorly (SmolLM2-135M writes no tag without the demonstration; with it,
it searches, then often repeats the search or answers without a tag), so its numbers measure the
protocol on an untrained model, not Search-R1.

``r1-searcher`` and ``research`` run their checkpoints' protocols (:data:`~.protocol.PROTOCOLS`,
with their deviations there); they have no parity fixture (their reference loops call vLLM and
their own servers directly, with no seam to substitute a model).
"""
from __future__ import annotations

from dynaprag.dynamic.method import MethodSpec
from dynaprag.dynamic.methods.search_r1 import components as _components  # noqa: F401 - registers them

SEARCH_R1_CHECKPOINT = "PeterJinGo/SearchR1-nq_hotpotqa_train-qwen2.5-7b-em-ppo"
"""The checkpoint ``infer.py:10`` runs (Qwen2.5-7B, PPO, NQ + HotpotQA training set)."""
R1_SEARCHER_CHECKPOINT = "XXsongLALA/Qwen-2.5-7B-base-RAG-RL"
"""R1-Searcher's Qwen checkpoint (its README)."""
RESEARCH_CHECKPOINT = "agentrl/ReSearch-Qwen-7B-Instruct"
"""ReSearch's instruct checkpoint (the README links the ``agentrl/research`` collection, not the id)."""


def _spec(protocol: str, checkpoint: str = "", demonstrate: bool = False, paper: str = "") -> MethodSpec:
    return MethodSpec("model-search", "search-tag", "search-turns", "information-block",
                      knobs={"trigger": {"protocol": protocol}, "selector": {"protocol": protocol},
                             "injector": {"protocol": protocol, "checkpoint": checkpoint, "demonstrate": demonstrate}},
                      paper=paper)


PRESETS: dict[str, MethodSpec] = {
    "search-r1": _spec(
        "search-r1", SEARCH_R1_CHECKPOINT,
        paper=f"Search-R1 (Jin et al. 2025) as its evaluation loop runs it (PeterGriffinJin/Search-R1 @a14dc3a "
              f"generation.py): needs the trained checkpoint ({SEARCH_R1_CHECKPOINT} by default); 4 turns, top-3, "
              f"deviations in dynaprag.dynamic.methods.search_r1"),
    "search-r1-prompted": _spec(
        "search-r1", demonstrate=True,
        paper="variant: Search-R1's protocol on any instruct model, with one worked trajectory (ours); untrained "
              "models follow it poorly"),
    "r1-searcher": _spec(
        "r1-searcher", R1_SEARCHER_CHECKPOINT,
        paper=f"R1-Searcher (Song et al. 2025; RUCAIBox/R1-Searcher @631167c eval_search_loacl.py): its protocol, "
              f"needs its checkpoint ({R1_SEARCHER_CHECKPOINT}); no parity fixture"),
    "research": _spec(
        "research", RESEARCH_CHECKPOINT,
        paper=f"ReSearch (Chen et al. 2025; Agent-RL/ReSearch @3b2fd14 ReSearchPipeline): its protocol, needs its "
              f"checkpoint ({RESEARCH_CHECKPOINT}); no parity fixture"),
}
