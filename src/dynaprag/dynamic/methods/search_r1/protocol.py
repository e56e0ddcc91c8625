"""The tag protocols of model-issued search: what the model writes and what the loop writes back.

A model trained with reinforcement learning to search (Search-R1, R1-Searcher, ReSearch) emits
a query between two tags; the reference loop stops it at the closing tag, searches, appends the
passages in its own information block and lets the model decode on, until the answer tag or a
turn limit. Everything that differs between these checkpoints is one :class:`SearchProtocol`:
the prompt, the tags, the block and passage format, the top-k, the turn and token limits, and
what a turn without an action means. A checkpoint only answers well in the protocol it was
trained in, so each has its own entry in :data:`PROTOCOLS`, with file:line citations.

The functions below are the protocol's pure text rules (unit-tested in ``tests/test_search_r1*``):
:func:`turn_end` says whether a turn's text is complete, :func:`cut_response` keeps the turn as
the reference keeps it, :func:`parse_action` reads the action, :func:`observation` renders what
is appended, :func:`final_answer` reads the answer.

The three prompts are the references' own text, verbatim (checked against each file). Search-R1's
protocol is reproduced by parity (``tests/comparison/test_search_r1_loop.py``; its deviations are in
:mod:`dynaprag.dynamic.methods.search_r1`). The other two have no parity fixture; their facts and
deviations:

* ``r1-searcher`` (``evaluation/eval_search_loacl.py`` @631167c; the README's ``gen_search.sh``
  runs ``--prompt_type v0 --temp 0.0``): the raw ``base_prompt_v0`` ending in ``Assistant: <think>``
  (:58-62, no chat template); greedy, 512 tokens a turn, stops at ``<|end_of_query|>``,
  ``</answer>`` or end of turn (:172-173); the answer is the text after the last ``<answer>``
  (:215-224); the query is the text after the last opening tag, quotes and ``...`` removed, tabs
  as spaces (:226-228); the turn is stripped and the block appended with the top-5 as
  ``({i}){doc}\n``, ``None`` when none (:230, :235, :276-285); anything else ends with "I don't
  know." (:253-260); the tenth generation is discarded (:203-213), so 8 searches can be read.
  Deviations: documents are ``Title: t Text: x``, the format of its corpus samples
  (``wiki_corpus_index_bulid/samples/train_np_title_abs_sample_100.tsv``; its server returns the
  corpus lines); an empty query searches nothing and the block says ``None`` (the reference ends
  with "I don't know.", :242-251); the prompt is tokenised without special tokens (vLLM adds a
  Llama checkpoint's BOS).
* ``research`` (``src/flashrag/pipeline/active_pipeline.py`` @3b2fd14, ``ReSearchPipeline``
  :16-105, before ReCall replaced it; ``scripts/evaluation/run_eval.py:95`` applies the chat
  template): the system prompt ``re_search_template_sys`` and the question as the user's message;
  each call stops at ``</search>`` or end of turn (:58, :77); the query is the text after the last
  ``<search>``, stripped (:33-42); the block is `` <result>\n{contents joined by blank lines}\n</result>``,
  ``nothing to search`` for an empty query (:68-76); the answer is the last ``\\boxed{}`` of the first
  ``<answer>`` (:97-100, ``re_search.py:48``). Deviations: no turn limit but the context there
  (8192 tokens, :55-86), here ``max_turns`` 64; ``contents`` is ``title\ntext`` (FlashRAG's
  corpora quote the title); ``nothing to search`` also when a search finds nothing.

>>> p = PROTOCOLS.get("search-r1")
>>> parse_action(p, cut_response(p, "<think> x </think>\\n<search> Jaws director </search>\\n"))
Action(kind='search', content='Jaws director')
>>> parse_action(p, "I think it is Paris.")
Action(kind='invalid', content='')
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from dynaprag.corpus import Passage
from dynaprag.registry import Registry

SEARCH, ANSWER, INVALID = "search", "answer", "invalid"


@dataclass(frozen=True)
class SearchProtocol:
    """One reference's tag protocol; every field is a fact of its reference code (see :data:`PROTOCOLS`)."""

    name: str
    reference: str  # repo @ commit, the loop's file
    prompt: str  # the instruction with ``{question}``
    chat: str  # "user": the prompt is one user message; "system": a system message, the question the user's
    # message; "none": raw text (and "user" falls back to raw text for a model without a chat template)
    search_tags: tuple[str, str]
    answer_tags: tuple[str, str]
    stop_at_answer: bool  # a closing answer tag ends the turn (else the answer ends at end of turn)
    query_from: str  # "first": the first opening tag of the turn (Search-R1's regex); "last": the last one
    information: str  # the block appended after a search, with ``{documents}``
    document: str  # one passage, with ``{i}`` (1-based), ``{title}``, ``{text}``
    no_documents: str  # the documents when nothing was found
    strip_documents: bool  # the joined documents are stripped before they go in the block
    strip_response: bool  # the turn's text is stripped before the block is appended
    query_cleanup: tuple[tuple[str, str], ...]  # replacements applied to the query, in order
    invalid: str | None  # appended after a turn without an action (None: the answer ends there)
    max_turns: int  # observations before the final turn, which gets none
    top_k: int
    turn_tokens: int  # a turn's generation budget (the reference's max_tokens per call)
    observation_tokens: int | None  # an observation is cut to this many tokens (None: never)
    answer_rule: str  # "last": the last answer tag's content, stripped; "split": the text after the last opening
    # tag; "boxed": the last \\boxed{} of the first answer tag's content
    question_mark: bool  # the question gets a final "?" when it has none

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat messages of ``question`` (for ``chat="none"``: one user message holding the raw text)."""
        question = normalise_question(self, question)
        if self.chat == "system":
            return [{"role": "system", "content": self.prompt}, {"role": "user", "content": question}]
        return [{"role": "user", "content": self.prompt.format(question=question)}]

    def raw_text(self, question: str) -> str:
        """The prompt as plain text, for ``chat="none"`` or a model without a chat template."""
        question = normalise_question(self, question)
        if self.chat == "system":
            return f"{self.prompt} User: {question}. Assistant:"
        return self.prompt.format(question=question)


class Action(NamedTuple):
    """What a finished turn asks for: a search (the query), the answer, or nothing valid."""

    kind: str
    content: str


def normalise_question(protocol: SearchProtocol, question: str) -> str:
    """``question`` stripped, with a final "?" if the protocol adds one (Search-R1's data scripts)."""
    question = question.strip()
    if protocol.question_mark and question and question[-1] != "?":
        question += "?"
    return question


def turn_end(protocol: SearchProtocol, text: str) -> str | None:
    """The action whose closing tag ended the turn ``text`` (the earliest one), else ``None``.

    Only closing tags end a turn; whether the turn is a valid action is :func:`parse_action`'s.
    """
    closes = [(text.find(protocol.search_tags[1]), SEARCH)]
    if protocol.stop_at_answer:
        closes.append((text.find(protocol.answer_tags[1]), ANSWER))
    found = sorted((at, kind) for at, kind in closes if at >= 0)
    return found[0][1] if found else None


def cut_response(protocol: SearchProtocol, text: str) -> str:
    """The turn as the reference keeps it: up to and including the closing tag that ended it."""
    kind = turn_end(protocol, text)
    if kind is None:
        return text.strip() if protocol.strip_response else text
    close = (protocol.search_tags if kind == SEARCH else protocol.answer_tags)[1]
    kept = text[: text.index(close)]
    return (kept.strip() if protocol.strip_response else kept) + close


def parse_action(protocol: SearchProtocol, response: str) -> Action:
    """The action of a finished turn's ``response`` (as :func:`cut_response` keeps it).

    A search needs both tags, the opening one before the closing one; the query is what lies
    between them (from the first or the last opening tag, as the reference reads it), cleaned
    and stripped. A turn closed by the answer tag is the answer. Anything else is invalid.
    """
    s_open, s_close = protocol.search_tags
    a_open, a_close = protocol.answer_tags
    if response.endswith(s_close):
        body = response[: -len(s_close)]
        at = body.find(s_open) if protocol.query_from == "first" else body.rfind(s_open)
        if at >= 0:
            query = body[at + len(s_open):]
            for old, new in protocol.query_cleanup:
                query = query.replace(old, new)
            return Action(SEARCH, query.strip())
        return Action(INVALID, "")
    if response.endswith(a_close) and a_open in response:
        return Action(ANSWER, response[response.rfind(a_open) + len(a_open): -len(a_close)].strip())
    return Action(INVALID, "")


def format_documents(protocol: SearchProtocol, passages: Sequence[Passage]) -> str:
    """The passages as the reference's retrieval text (e.g. ``Doc 1(Title: t) text\\n``)."""
    if not passages:
        return protocol.no_documents
    text = "".join(protocol.document.format(i=i, title=p.title, text=p.text) for i, p in enumerate(passages, 1))
    return text.strip() if protocol.strip_documents else text


def observation(protocol: SearchProtocol, action: Action, passages: Sequence[Passage]) -> str:
    """The text appended after a turn: the information block for a search, the invalid-action
    message for an invalid turn (``""`` when the protocol has none, or after an answer)."""
    if action.kind == SEARCH:
        return protocol.information.format(documents=format_documents(protocol, passages))
    if action.kind == INVALID:
        return protocol.invalid or ""
    return ""


def final_answer(protocol: SearchProtocol, responses: str) -> str | None:
    """The answer the reference scores from the model's responses, or ``None`` (scored wrong)."""
    a_open, a_close = protocol.answer_tags
    if protocol.answer_rule == "boxed":
        match = re.search(re.escape(a_open) + r"(.*?)" + re.escape(a_close), responses.strip(), flags=re.DOTALL)
        return None if match is None else last_boxed(match.group(1))
    if protocol.answer_rule == "split":
        if a_open not in responses:
            return None
        return responses.split(a_open)[-1].split(a_close)[0]
    matches = re.findall(re.escape(a_open) + r"(.*?)" + re.escape(a_close), responses, flags=re.DOTALL)
    return matches[-1].strip() if matches else None


def last_boxed(text: str) -> str:
    """The content of the last ``\\boxed{...}`` in ``text`` (braces balanced), ``""`` when there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return ""
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1: j]
    return ""


PROTOCOLS: Registry[SearchProtocol] = Registry("search protocol")

SEARCH_R1_PROMPT = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get "
    "new information. After reasoning, if you find you lack some knowledge, you can call a search engine by "
    "<search> query </search> and it will return the top searched results between <information> and "
    "</information>. You can search as many times as your want. If you find no further external knowledge needed, "
    "you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For "
    "example, <answer> Beijing </answer>. Question: {question}\n")

PROTOCOLS.register("search-r1", SearchProtocol(
    name="search-r1",
    reference="PeterGriffinJin/Search-R1 @a14dc3a4ffc6fe88c1e95038d9738e21ba3f7a06 search_r1/llm_agent/generation.py",
    prompt=SEARCH_R1_PROMPT, chat="user",
    search_tags=("<search>", "</search>"), answer_tags=("<answer>", "</answer>"), stop_at_answer=True,
    query_from="first",
    information="\n\n<information>{documents}</information>\n\n",
    document="Doc {i}(Title: {title}) {text}\n", no_documents="", strip_documents=True, strip_response=False,
    query_cleanup=(),
    invalid=("\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
             "</search>. If I want to give the final answer, I should put the answer between <answer> and "
             "</answer>. Let me try again.\n"),
    max_turns=4, top_k=3, turn_tokens=500, observation_tokens=500, answer_rule="last", question_mark=True))

PROTOCOLS.register("r1-searcher", SearchProtocol(
    name="r1-searcher",
    reference="RUCAIBox/R1-Searcher @631167cbb3c2464f805730e3e364a690f5b136d4 evaluation/eval_search_loacl.py",
    prompt=(
        "The User asks a question, and the Assistant solves it.\nThe Assistant first thinks about the reasoning "
        "process in the mind and then provides the User with the final answer.\nThe output format of reasoning "
        "process and final answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, "
        "i.e., \"<think> reasoning process here </think>\n\n<answer> final answer here </answer>\".\nDuring the "
        "thinking process, the Assistant can perform searching for uncertain knowledge if necessary with the format "
        "of \"<|begin_of_query|> search query (only keywords) here <|end_of_query|>\". **A query must involve only a "
        "single triple**.\nThen, the system will provide the Assistant with helpful information with the format of "
        "\"<|begin_of_documents|> ...search results... <|end_of_documents|>\".\n\nUser:{question}\nAssistant: <think>"),
    chat="none",
    search_tags=("<|begin_of_query|>", "<|end_of_query|>"), answer_tags=("<answer>", "</answer>"),
    stop_at_answer=True, query_from="last",
    information="\n\n<|begin_of_documents|>\n{documents}<|end_of_documents|>\n\n",
    document="({i})Title: {title} Text: {text}\n", no_documents="None", strip_documents=False, strip_response=True,
    query_cleanup=(('"', ""), ("'", ""), ("\t", " "), ("...", "")),
    invalid=None, max_turns=8, top_k=5, turn_tokens=512, observation_tokens=None, answer_rule="split",
    question_mark=False))

PROTOCOLS.register("research", SearchProtocol(
    name="research",
    reference="Agent-RL/ReSearch @3b2fd14 src/flashrag/pipeline/active_pipeline.py (ReSearchPipeline)",
    prompt=(
        "You are a helpful assistant that can solve the given question step by step with the help of the wikipedia "
        "search tool. Given a question, you need to first think about the reasoning process in the mind and then "
        "provide the answer. During thinking, you can invoke the wikipedia search tool to search for fact information "
        "about specific topics if needed. The reasoning process and answer are enclosed within <think> </think> and "
        "<answer> </answer> tags respectively, and the search query and result are enclosed within <search> </search> "
        "and <result> </result> tags respectively. For example, <think> This is the reasoning process. </think> "
        "<search> search query here </search> <result> search result here </result> <think> This is the reasoning "
        "process. </think> <answer> The final answer is \\[ \\boxed{answer here} \\] </answer>. In the last part of "
        "the answer, the final exact answer is enclosed within \\boxed{} with latex format."),
    chat="system",
    search_tags=("<search>", "</search>"), answer_tags=("<answer>", "</answer>"), stop_at_answer=False,
    query_from="last",
    information=" <result>\n{documents}\n</result>", document="{title}\n{text}\n\n",
    no_documents="nothing to search", strip_documents=True, strip_response=False, query_cleanup=(), invalid=None,
    max_turns=64, top_k=5, turn_tokens=8192, observation_tokens=None, answer_rule="boxed", question_mark=False))
