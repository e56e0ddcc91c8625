"""Offline document augmentation: the LLM rewrites each passage and writes question-answer pairs.

PRAG (Su et al., SIGIR 2025, §3.2.1 "Document Augmentation", Eq. 2-3) turns a document d into
{(d_k, q_j, a_j)}: n rewrites d_k of d and m QA pairs about it, written by the same LLM; PRAG's
default is n = 1 rewrite and m = 3 pairs. The prompts here are ours. Small models often ignore
the requested format, so the parser accepts the usual variants (``Q:``/``Question 1:``,
numbering, markdown bold, one-line ``Q: … A: …``, JSON) and each part is retried a bounded number
of times (greedy first, then sampling) and the failures are counted in the record: a document
whose augmentation failed keeps its failure list and is still encoded from what was obtained.

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
    """PRAG's augmentation knobs (defaults: 1 rewrite, 3 QA pairs)."""

    rewrites: int = field(default=1, metadata={"help": "rewrites per passage (PRAG: 1)"})
    qa_pairs: int = field(default=3, metadata={"help": "question-answer pairs per passage (PRAG: 3)"})
    max_new_tokens_rewrite: int = field(default=256, metadata={
        "help": "token budget of a rewrite (also capped at 1.3x the passage's tokens + 16)"})
    max_new_tokens_qa: int = field(default=160, metadata={"help": "token budget of the QA list"})
    max_retries: int = field(default=2, metadata={"help": "extra sampled attempts after a failed parse"})
    retry_temperature: float = field(default=0.8, metadata={"help": "sampling temperature of retries"})
    max_answer_words: int = field(default=20, metadata={"help": "longer 'answers' are rejected as malformed"})
    batch_docs: int = field(default=4, metadata={"help": "documents whose prompts decode as one batch"})


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
    """Runs the augmentation prompts on a loaded model (HF ``generate``, greedy then sampled)."""

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
        """One batched generation; attempt 0 is greedy, later attempts sample with a per-attempt seed.

        Prompts are left-padded; each output is cut to its own token budget, which equals having
        generated it alone with that budget (decoding is causal).
        """
        tok = self.lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        prompts = [self._prompt_ids(t) for t in texts]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.lm.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.lm.device)
        kwargs: dict[str, Any] = {"do_sample": False}
        if attempt > 0:
            torch.manual_seed(1000 + attempt)
            kwargs = {"do_sample": True, "temperature": self.config.retry_temperature, "top_p": 0.95}
        out = self.lm.model.generate(ids, attention_mask=mask, max_new_tokens=max(budgets), pad_token_id=pad,
                                     top_k=None, **kwargs)
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
        for round_ in range(cfg.max_retries + 1):
            jobs = []
            for i, (p, rec) in enumerate(zip(passages, records)):
                text = p.as_context()
                for j in range(cfg.rewrites - len(rec.rewrites)):
                    jobs.append(_Job(i, "rewrite", REWRITE_PROMPT.format(passage=text), budgets[i],
                                     round_ + len(rec.rewrites) + j))
                if len(rec.qa) < cfg.qa_pairs:
                    jobs.append(_Job(i, "qa", QA_PROMPT.format(n=cfg.qa_pairs, passage=text),
                                     cfg.max_new_tokens_qa, round_))
            if not jobs:
                break
            for greedy in (True, False):
                group = [job for job in jobs if (job.attempt == 0) == greedy]
                if not group:
                    continue
                outputs = self.complete_many([job.prompt for job in group], [job.budget for job in group],
                                             0 if greedy else max(job.attempt for job in group))
                for job, output in zip(group, outputs):
                    self._take(records[job.doc], passages[job.doc], job, output, round_)
        return records

    def _take(self, record: Augmentation, passage: Passage, job: _Job, output: str, round_: int) -> None:
        """Parse one output into its record, or count the failure."""
        cfg = self.config
        record.attempts += 1
        if job.kind == "rewrite":
            rewrite = parse_rewrite(output, passage.text)
            if rewrite and rewrite not in record.rewrites and len(record.rewrites) < cfg.rewrites:
                record.rewrites.append(rewrite)
            else:
                record.failures.append(f"rewrite attempt {round_ + 1}: unparseable or copied output")
            return
        pairs = parse_qa_pairs(output, cfg.max_answer_words)
        known = {item["question"].lower() for item in record.qa}
        for q, a in pairs:
            if len(record.qa) < cfg.qa_pairs and q.lower() not in known:
                record.qa.append({"question": q, "answer": a})
                known.add(q.lower())
        if len(record.qa) < cfg.qa_pairs:
            record.failures.append(f"qa attempt {round_ + 1}: {len(pairs)} usable pairs parsed")
