"""Offline document augmentation: the LLM rewrites each passage and writes question-answer pairs.

PRAG (Su et al., SIGIR 2025, §3.2.1 "Document Augmentation", Eq. 2-3) turns a document d into
{(d_k, q_j, a_j)}: n rewrites d_k of d and m QA pairs about it, written by the same LLM; PRAG's
default is n = 1 rewrite and m = 3 pairs. With ``prompts="prag"`` (default) this follows the
reference code (oneal2000/PRAG @e03742e ``src/augment.py``): its rewrite and QA prompts, the QA
list as JSON with ``question``/``answer``/``full_answer`` (at least three items, the first
three kept, list answers joined, numbers as text, null as "Unknown"), the rewrite taken as
generated, and sampling at temperature 0.7 with top-k 50 on every attempt. A passage whose QA
list never parses is not usable (:attr:`Augmentation.usable`): the reference then skips it and
takes the next retrieved passage (it retrieves top-k + 10), and so do :func:`usable_first` and
the encoders here; the failures are recorded.

Deviations, all knobs: the reference retries an unparsable QA list up to 100 times with 512 new
tokens each (and forever while the JSON parses but has under three items); here
``max_retries`` (2) extra attempts with ``max_new_tokens_qa`` (256) tokens, and the rewrite's
budget is also capped at 1.3x the passage's tokens + 16. The reference's top-p and repetition
penalty come from each model's own generation config; here top-p is 1. The JSON list is cut
from the first "[" to the last "]" (the reference does this for its Llama models only).
``prompts="lenient"`` keeps our own prompts and a parser that accepts the usual small-model
variants (``Q:``/``Question 1:``, numbering, markdown bold, one-line ``Q: … A: …``), for models
that rarely write valid JSON.

Why batched: on a CPU, a decoding step of a small model for a few sequences costs far less than
that many single-sequence steps (much of a step is per-layer overhead), so the prompts of
several documents, rewrite and QA alike, decode as one left-padded batch per attempt round
(1.4x per document in ``bench/results/augment.md``; the batch runs as long as its longest row).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from dynaprag.corpus import Passage

PRAG_REWRITE_PROMPT = (
    "Rewrite the following passage. While keeping the entities, proper nouns, and key details such as names, "
    "locations, and terminology intact, create a new version of the text that expresses the same ideas in a "
    "different way. Make sure the revised passage is distinct from the original one, but preserves the core "
    "meaning and relevant information.\n{passage}")
PRAG_QA_PROMPT = (
    "I will provide a passage of text, and you need to generate three different questions based on the content "
    "of this passage. Each question should be answerable using the information provided in the passage. "
    "Additionally, please provide an appropriate answer for each question derived from the passage.\n"
    "You need to generate the question and answer in the following format:\n"
    "[\n    {{\n        \"question\": \"What is the capital of France?\",\n        \"answer\": \"Paris\"\n"
    "        \"full_answer\": \"The capital of France is Paris.\"\n    }}, \n]\n\n"
    "This list should have at least three elements. You only need to output this list in the above format.\n"
    "Passage:\n{passage}")
REWRITE_PROMPT = ("Rewrite the following passage in your own words. Keep every name, date and "
                  "number. Reply with the rewritten passage only.\n\nPassage: {passage}")
QA_PROMPT = ("Read the passage and write {n} different questions that the passage answers, each "
             "followed by its short answer (a few words). Use exactly this format:\n"
             "Q: <question>\nA: <answer>\n\nPassage: {passage}")

_PREFIX = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))?\s*")
_Q = re.compile(r"^(?:q|question)\s*\d*\s*[:.)-]\s*(.*)$", re.IGNORECASE)
_A = re.compile(r"^(?:a|answer)\s*\d*\s*[:.)-]\s*(.*)$", re.IGNORECASE)
_INLINE = re.compile(r"(?:^|\s)(?:a|answer)\s*:\s*", re.IGNORECASE)


@dataclass
class AugmentConfig:
    """PRAG's augmentation knobs (defaults: the reference's prompts and sampling, 1 rewrite, 3 QA pairs)."""

    prompts: str = field(default="prag", metadata={
        "help": "prag: the reference's prompts and JSON QA with full answers; lenient: ours, for small models"})
    rewrites: int = field(default=1, metadata={"help": "rewrites per passage (PRAG: 1)", "max": 64})
    qa_pairs: int = field(default=3, metadata={"help": "question-answer pairs per passage (PRAG: 3)",
                                               "max": 64})
    max_new_tokens_rewrite: int = field(default=512, metadata={
        "help": "token budget of a rewrite, also capped at 1.3x the passage's tokens + 16 (PRAG: 512)",
        "max": 8192})
    max_new_tokens_qa: int = field(default=256, metadata={"help": "token budget of the QA list (PRAG: 512)",
                                                          "max": 8192})
    max_retries: int = field(default=2, metadata={"help": "extra attempts after an unparsable QA list (PRAG: 100)",
                                                  "max": 1000})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (PRAG: 0.7)"})
    top_k: int = field(default=50, metadata={"help": "sampling top-k (PRAG: 50)"})
    greedy_first: bool = field(default=False, metadata={
        "help": "decode the first attempt greedily, sample only retries (PRAG samples every attempt)"})
    max_answer_words: int = field(default=20, metadata={"help": "longer 'answers' are rejected as malformed"})
    batch_docs: int = field(default=4, metadata={"help": "documents whose prompts decode as one batch",
                                                 "max": 256})

    def __post_init__(self) -> None:
        if self.prompts not in ("prag", "lenient"):
            raise ValueError(f"augment.prompts must be 'prag' or 'lenient', not {self.prompts!r}")
        for name in ("rewrites", "qa_pairs", "max_new_tokens_rewrite", "max_new_tokens_qa", "batch_docs", "top_k"):
            if int(getattr(self, name)) < (0 if name == "rewrites" else 1):
                raise ValueError(f"augment.{name} must be positive, not {getattr(self, name)!r}")
        if self.max_retries < 0 or not self.temperature > 0:
            raise ValueError("augment.max_retries must be >= 0 and augment.temperature > 0")


@dataclass
class Augmentation:
    """The augmented document: rewrites, QA pairs, and how many attempts/failures it took."""

    passage: dict[str, str]
    rewrites: list[str] = field(default_factory=list)
    qa: list[dict[str, str]] = field(default_factory=list)
    attempts: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.rewrites) and bool(self.qa)

    @property
    def usable(self) -> bool:
        """PRAG trains on a passage only if its QA generation parsed; otherwise it is skipped."""
        return bool(self.qa)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Augmentation":
        return cls(**data)


def _clean(line: str) -> str:
    line = line.replace("**", "").replace("__", "").strip()
    return _PREFIX.sub("", line, count=1).strip() if _PREFIX.match(line) else line


def parse_qa_pairs(text: str, max_answer_words: int = 20) -> list[tuple[str, str]]:
    """Question-answer pairs in a model's output; malformed or empty pairs are skipped.

    Accepts ``Q:/A:`` and ``Question N:/Answer N:`` lines (numbered, bulleted or bold), a
    question and answer on one line, and a JSON list of ``{"question", "answer"}`` objects.
    """
    pairs: list[tuple[str, str]] = []
    stripped = text.strip()
    start = stripped.find("[")
    if start >= 0:
        try:
            data = json.loads(stripped[start: stripped.rfind("]") + 1])
            for item in data if isinstance(data, list) else []:
                if isinstance(item, dict) and item.get("question") and item.get("answer"):
                    pairs.append((str(item["question"]).strip(), str(item["answer"]).strip()))
        except json.JSONDecodeError:
            pass
    if not pairs:
        question = None
        for raw in stripped.splitlines():
            line = _clean(raw)
            if not line:
                continue
            q, a = _Q.match(line), _A.match(line)
            if q:
                body = q.group(1).strip()
                parts = _INLINE.split(body, maxsplit=1)
                if len(parts) == 2:
                    pairs.append((parts[0].strip(), parts[1].strip()))
                    question = None
                else:
                    question = body
            elif a and question:
                pairs.append((question, a.group(1).strip()))
                question = None
    seen, out = set(), []
    for q, a in pairs:
        a = a.strip().strip('"').rstrip(".").strip()
        q = q.strip().strip('"')
        key = q.lower()
        if len(q) < 5 or not a or len(a.split()) > max_answer_words or key in seen:
            continue
        seen.add(key)
        out.append((q, a))
    return out


def parse_prag_qa(text: str, n: int = 3) -> list[dict[str, str]] | None:
    """The reference's QA list: JSON of >= n objects with question, answer and full_answer; the
    first n, answers made text (lists joined with ", ", numbers as digits, null as "Unknown").
    None when the output does not parse into that."""
    start, end = text.find("["), text.rfind("]")
    if start < 0:
        return None
    body = text[start: end + 1] if end > start else text[start:].rstrip().rstrip(",") + "]"
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, list) or len(data) < n:
        return None
    out = []
    for item in data[:n]:
        if not isinstance(item, dict) or not {"question", "answer", "full_answer"} <= set(item):
            return None
        answer = item["answer"]
        if isinstance(answer, list):
            answer = ", ".join(str(a) for a in answer)
        answer = "Unknown" if answer is None else str(answer)
        out.append({"question": str(item["question"]), "answer": answer, "full_answer": str(item["full_answer"])})
    return out


def parse_rewrite(text: str, passage: str) -> str | None:
    """The rewritten passage in a model's output, or None if it is missing, a copy, or truncated.

    Drops a lead-in line ("Here is the rewritten passage:"), a ``Rewrite:`` label and quotes;
    rejects outputs under 30 % or over 3x the passage's length and degenerate repetition.
    """
    lines = [ln.strip() for ln in text.strip().splitlines()]
    while lines and (not lines[0] or (lines[0].endswith(":") and len(lines[0].split()) <= 10)):
        lines.pop(0)
    body = " ".join(ln for ln in lines if ln).strip()
    body = re.sub(r"^(?:rewritten passage|rewrite|passage)\s*:\s*", "", body, flags=re.IGNORECASE)
    body = body.strip().strip('"“”').strip()
    words, source = body.split(), passage.split()
    if len(words) < max(5, int(0.3 * len(source))) or len(words) > 3 * len(source) + 20:
        return None
    if " ".join(words).lower() == " ".join(source).lower():
        return None
    if len({w.lower() for w in words}) < 0.4 * len(words):  # degenerate repetition
        return None
    return body


@dataclass
class _Job:
    """One generation an attempt round needs: a part of one document's augmentation."""

    doc: int
    kind: str  # "rewrite" | "qa"
    prompt: str
    budget: int
    attempt: int  # 0 = greedy, later = sampled


class Augmenter:
    """Runs the augmentation prompts on a loaded model (HF ``generate``, sampled as the reference)."""

    def __init__(self, lm, config: AugmentConfig | None = None):
        self.lm = lm
        self.config = config or AugmentConfig()

    def _prompt_ids(self, text: str) -> list[int]:
        tok = self.lm.tokenizer
        if self.lm.chat_template:
            rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)
            return tok.encode(rendered, add_special_tokens=False)
        return tok.encode(text + "\n\nAnswer:\n", add_special_tokens=False)

    @torch.inference_mode()
    def complete_many(self, texts: list[str], budgets: list[int], attempt: int) -> list[str]:
        """One batched generation, sampled with a per-attempt seed (``attempt`` < 0: greedy).

        Prompts are left-padded; each output is cut to its own token budget, which equals having
        generated it alone with that budget (decoding is causal).
        """
        tok = self.lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        prompts = [self._prompt_ids(t) for t in texts]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.lm.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.lm.device)
        kwargs: dict[str, Any] = {"do_sample": False, "top_k": None}
        if attempt >= 0:
            torch.manual_seed(1000 + attempt)
            kwargs = {"do_sample": True, "temperature": self.config.temperature, "top_k": self.config.top_k,
                      "top_p": 1.0}
        out = self.lm.model.generate(ids, attention_mask=mask, max_new_tokens=max(budgets), pad_token_id=pad,
                                     **kwargs)
        return [tok.decode(row[width: width + budget], skip_special_tokens=True)
                for row, budget in zip(out, budgets)]

    def augment(self, passage: Passage) -> Augmentation:
        return self.augment_many([passage])[0]

    def augment_many(self, passages: list[Passage]) -> list[Augmentation]:
        """Augment several documents, every attempt round decoded as one batch per decoding mode."""
        cfg = self.config
        records = [Augmentation(passage={"id": p.id, "title": p.title, "text": p.text}) for p in passages]
        budgets = [min(cfg.max_new_tokens_rewrite,
                       int(1.3 * len(self.lm.tokenizer.encode(p.text, add_special_tokens=False))) + 16)
                   for p in passages]
        prag = cfg.prompts == "prag"
        rewrite_prompt, qa_prompt = (PRAG_REWRITE_PROMPT, PRAG_QA_PROMPT) if prag else (REWRITE_PROMPT, QA_PROMPT)
        for round_ in range(cfg.max_retries + 1):
            jobs = []
            for i, (p, rec) in enumerate(zip(passages, records)):
                text = p.as_context()
                for j in range(cfg.rewrites - len(rec.rewrites)):
                    jobs.append(_Job(i, "rewrite", rewrite_prompt.format(passage=text), budgets[i],
                                     round_ + len(rec.rewrites) + j))
                if len(rec.qa) < cfg.qa_pairs:
                    jobs.append(_Job(i, "qa", qa_prompt.format(n=cfg.qa_pairs, passage=text),
                                     cfg.max_new_tokens_qa, round_))
            if not jobs:
                break
            for greedy in (True, False):
                group = [job for job in jobs if (job.attempt == 0 and cfg.greedy_first) == greedy]
                if not group:
                    continue
                outputs = self.complete_many([job.prompt for job in group], [job.budget for job in group],
                                             -1 if greedy else max(job.attempt for job in group))
                for job, output in zip(group, outputs):
                    self._take(records[job.doc], passages[job.doc], job, output, round_)
        return records

    def _take(self, record: Augmentation, passage: Passage, job: _Job, output: str, round_: int) -> None:
        """Parse one output into its record, or count the failure."""
        cfg = self.config
        record.attempts += 1
        if job.kind == "rewrite":
            rewrite = (output.strip() or None) if cfg.prompts == "prag" else parse_rewrite(output, passage.text)
            if rewrite and rewrite not in record.rewrites and len(record.rewrites) < cfg.rewrites:
                record.rewrites.append(rewrite)
            else:
                record.failures.append(f"rewrite attempt {round_ + 1}: unparseable or copied output")
            return
        if cfg.prompts == "prag":
            qa = parse_prag_qa(output, cfg.qa_pairs)
            if qa is None:
                record.failures.append(f"qa attempt {round_ + 1}: no JSON list of {cfg.qa_pairs} complete items")
            else:
                record.qa = qa
            return
        pairs = parse_qa_pairs(output, cfg.max_answer_words)
        known = {item["question"].lower() for item in record.qa}
        for q, a in pairs:
            if len(record.qa) < cfg.qa_pairs and q.lower() not in known:
                record.qa.append({"question": q, "answer": a})
                known.add(q.lower())
        if len(record.qa) < cfg.qa_pairs:
            record.failures.append(f"qa attempt {round_ + 1}: {len(pairs)} usable pairs parsed")


def usable_first(augmenter: Augmenter, candidates: list[Passage], k: int,
                 known: dict[str, Augmentation] | None = None) -> tuple[list[Augmentation], list[Augmentation]]:
    """The reference's selection: walk the ranked candidates (PRAG retrieves top-k + 10), keep the
    first ``k`` whose augmentation is usable, skip the others; returns (kept, skipped).

    Candidates are augmented only as far as needed (as many at once as are still missing);
    ``known`` holds augmentations already made (by content hash), reused instead of redone.
    """
    known = dict(known or {})
    kept: list[Augmentation] = []
    skipped: list[Augmentation] = []
    pos = 0
    while len(kept) < k and pos < len(candidates):
        batch = candidates[pos: pos + k - len(kept)]
        pos += len(batch)
        fresh = [p for p in batch if p.content_hash not in known]
        for p, aug in zip(fresh, augmenter.augment_many(fresh) if fresh else []):
            known[p.content_hash] = aug
        for p in batch:
            aug = known[p.content_hash]
            if len(kept) < k and aug.usable:
                kept.append(aug)
            elif not aug.usable:
                skipped.append(aug)
    return kept, skipped
