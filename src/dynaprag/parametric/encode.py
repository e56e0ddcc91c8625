"""Offline parametric encoding: one LoRA per document, trained with peft on the real model.

PRAG (Su et al., SIGIR 2025, §3.2.2 "Parametric Knowledge Encoding", Eq. 4) trains, for each
document, a LoRA ΔΘ on the FFN projections by minimising the language-modelling loss over its
augmented samples [d_k ⊕ q_j ⊕ a_j]. Defaults are the reference code's (oneal2000/PRAG
@e03742e, ``src/encode.py`` and ``configs/*.sh``): rank 2, alpha 32, dropout 0, lr 3e-4,
1 epoch, batch 1, samples cut at 3000 tokens, the loss on every input token (labels = input
ids, prompt and chat markup included), gate/up/down projections, and every document starting
from the same initialisation (the reference saves one ``base_weight`` adapter; here it is
regenerated bit-for-bit from ``init_seed`` so Ray workers share it without a file).

Samples are the reference's ``get_train_data`` (parity: ``tests/comparison/test_prag_samples.py``):
the first ⌈m/2⌉ QA pairs once with the passage and once with each rewrite as "Passage 1", the
rest with no passage, each rendered by the reference prompt template
(:class:`PragTemplate`) in the model's chat format; with
``with_cot`` (what every HotpotQA/2Wiki config of the reference uses) the user turn carries a
few-shot block and the answer is ``Answer: <full answer>``, without it ``The answer is
<answer>``. A passage whose augmentation failed is skipped, as in the reference
(:func:`encode_many` yields no adapter for it; the store records it); ``failed_augmentation=
"plain-text"`` trains on its text instead (for models too small to write QA lists: not PRAG).

Deviations, all knobs: ``epochs`` is 1 (the reference's configs use 2 for PopQA and for
HotpotQA with Qwen2.5-1.5B: set ``epochs=2`` there); the few-shot block comes from our
exemplar sets (``fewshot``; a path to the reference's ``src/fewshot/<dataset>.json`` works
too); a model without a chat template gets ``user + "\n" + assistant``.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from dynaprag.corpus import Passage
from dynaprag.parametric.adapters import AdapterStore
from dynaprag.parametric.augment import AugmentConfig, Augmentation, Augmenter
from dynaprag.parametric.lora import DEFAULT_TARGETS, from_peft_state_dict


# -- PRAG's prompt template (reference src/prompt_template.py), for training and answering ------

_USER = ("You should answer the question by referring to the knowledge provided below and integrating "
         "your own knowledge.\n{passages}\n\nQuestion: {question}")
_USER_COT = ("You should reference the knowledge provided below and combine it with your own knowledge to "
             "answer the question. Please follow the format of the example I provided above.\n"
             "Here are some examples about how to answer the questions.\n{fewshot}Here are some reference.\n"
             "{passages}\n\nLet's think step by step. Answer the questions in the same format as above.\n"
             "Question: {question}")
_ASSISTANT, _ASSISTANT_COT = "The answer is {answer}", "Answer: {answer}"


def normalise_question(question: str) -> str:
    """The reference's question clean-up: strip, end with "?", and "x ?" becomes "x?"."""
    question = question.strip()
    if not question.endswith("?"):
        return question + "?"
    return question[:-1].strip() + "?" if question.endswith(" ?") else question


def normalise_answer(answer: str | None) -> str:
    """The reference's target clean-up: strip and end with "." (no answer: empty, the generation cue)."""
    if answer is None:
        return ""
    answer = answer.strip()
    return answer if answer.endswith(".") else answer + "."


def fewshot_block(exemplars: Iterable[tuple[str, str]]) -> str:
    """Exemplars as the reference's ``get_fewshot`` writes them: "Question: q\nAnswer: a\n\n" each."""
    return "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in exemplars)


def load_fewshot(source: str) -> str:
    """The few-shot block from an exemplar set name or a JSON file of ``[{question, answer}]``."""
    import json
    from pathlib import Path

    if source.endswith(".json"):
        try:
            items = json.loads(Path(source).read_text(encoding="utf-8"))
            return fewshot_block((str(e["question"]), str(e["answer"])) for e in items)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"encode.fewshot: {source} is not a readable JSON list of "
                             f"{{question, answer}} objects ({exc})") from None
    from dynaprag.lm.prompts import load_exemplars

    try:
        _, exemplars = load_exemplars(source)
    except KeyError as exc:
        raise ValueError(f"encode.fewshot: {exc.args[0]}") from None
    return fewshot_block((e.question, e.answer) for e in exemplars)


@dataclass(frozen=True)
class PragTemplate:
    """PRAG's prompt: one user turn (instruction, [few-shot], passages, question), then the answer cue.

    The same text serves training (with the answer) and answering (answer empty: the prompt
    ends with "Answer: " or "The answer is "), as in the reference.
    """

    with_cot: bool = True
    fewshot: str = ""

    def user(self, question: str, passages: Sequence[str] | None) -> str:
        block = "".join(f"Passage {i + 1}: {p}\n" for i, p in enumerate(passages or []))
        template = _USER_COT if self.with_cot else _USER
        return template.format(question=normalise_question(question), passages=block, fewshot=self.fewshot)

    def assistant(self, answer: str | None) -> str:
        return (_ASSISTANT_COT if self.with_cot else _ASSISTANT).format(answer=normalise_answer(answer))

    def head(self, tokenizer, chat: bool, user: str) -> str:
        """The rendered text before the assistant's words (chat markup included)."""
        if chat:
            return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                 add_generation_prompt=True)
        return user + "\n"

    def ids(self, tokenizer, chat: bool, question: str, passages: Sequence[str] | None,
            answer: str | None = None) -> list[int]:
        """Token ids as the reference builds them: the rendered chat turn, then the assistant text."""
        head = self.head(tokenizer, chat, self.user(question, passages))
        return (tokenizer.encode(head, add_special_tokens=False)
                + tokenizer.encode(self.assistant(answer), add_special_tokens=False))


class PragPromptBuilder:
    """:class:`~dynaprag.lm.prompts.PromptBuilder`'s interface over :class:`PragTemplate`, so the
    decoding loop answers in the format the adapters were trained on.

    :meth:`build` tokenises the chat turn in one piece and the answer cue apart, like the
    reference, so its ids equal :meth:`PragTemplate.ids`. The reusable prefix (its KV cache is
    computed once) is the longest run of leading tokens that two different prompts share, less
    one token: text at a segment edge may tokenise differently with what follows it.
    """

    def __init__(self, tokenizer, chat: bool, template: PragTemplate):
        self.tokenizer, self.chat, self.template = tokenizer, chat, template
        probes = [self.encode(self._head("\x00A\x00", ())),
                  self.encode(self._head("\x00B\x00", [Passage("", "", "\x00C\x00")]))]
        n = 0
        while n < min(map(len, probes)) and probes[0][n] == probes[1][n]:
            n += 1
        self.prefix_ids = probes[0][: max(0, n - 1)]
        self.prefix_text = tokenizer.decode(self.prefix_ids)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _head(self, question: str, passages: Sequence[Passage]) -> str:
        texts = [p.as_context() for p in passages]
        return self.template.head(self.tokenizer, self.chat, self.template.user(question, texts or None))

    def knowledge_ids(self, passages: Sequence[Passage]) -> list[int]:
        return self.encode("".join(f"Passage {i + 1}: {p.as_context()}\n" for i, p in enumerate(passages)))

    def question_ids(self, question: str) -> list[int]:
        """The tokens from the question line to the answer cue (what the loop treats as the question)."""
        head = self._head(question, ())
        return self.encode(head[head.rindex("Question: "):]) + self.encode(self.template.assistant(None))

    def build(self, question: str, passages: Sequence[Passage] = (), answer_ids: Sequence[int] = ()) -> list[int]:
        head = self._head(question, passages)
        ids = self.encode(head)
        if ids[: len(self.prefix_ids)] != self.prefix_ids:  # never seen; keeps the prefix cache valid
            ids = self.prefix_ids + self.encode(head[len(self.prefix_text):])
        return ids + self.encode(self.template.assistant(None)) + list(answer_ids)


@dataclass
class EncodeConfig:
    """LoRA, training and sample settings of PRAG's offline encoding (they key the adapter store)."""

    rank: int = field(default=2, metadata={"help": "LoRA rank r (PRAG: 2)", "max": 1024})
    alpha: float = field(default=32.0, metadata={"help": "LoRA alpha; scaling = alpha / r (PRAG: 32)"})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (PRAG: 0)"})
    targets: tuple[str, ...] = field(default=DEFAULT_TARGETS, metadata={"help": "projections that get a LoRA (PRAG: FFN gate/up/down)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate (PRAG: 3e-4)"})
    epochs: int = field(default=1, metadata={
        "help": "passes over the document's samples (PRAG configs: 1; 2 for PopQA and HotpotQA-Qwen2.5-1.5B)",
        "max": 1000})
    max_length: int = field(default=3000, metadata={"help": "tokens per training sample, cut beyond (PRAG: 3000)",
                                                    "max": 32768})
    init_seed: int = field(default=42, metadata={"help": "seed of the shared LoRA initialisation"})
    with_cot: bool = field(default=True, metadata={
        "help": "PRAG's --with_cot template: few-shot block, 'Answer: <full answer>' (PRAG's HotpotQA/2Wiki configs)"})
    fewshot: str = field(default="default", metadata={
        "help": "few-shot block of the cot template: an exemplar set of data/exemplars.yaml or a "
                "JSON file of [{question, answer}] (the reference's src/fewshot/<dataset>.json)"})
    failed_augmentation: str = field(default="skip", metadata={
        "help": "a passage whose QA list never parsed: skip it (PRAG) or train on its text (plain-text)"})
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"help": "document augmentation"})

    def __post_init__(self) -> None:
        if self.failed_augmentation not in ("skip", "plain-text"):
            raise ValueError(f"encode.failed_augmentation must be 'skip' or 'plain-text', "
                             f"not {self.failed_augmentation!r}")
        for name in ("rank", "epochs", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"encode.{name} must be >= 1, not {getattr(self, name)!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"encode.learning_rate must be a positive number, not {self.learning_rate!r}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def template(self) -> PragTemplate:
        """The prompt template of training samples, and of answers under these adapters."""
        return PragTemplate(with_cot=self.with_cot, fewshot=load_fewshot(self.fewshot) if self.with_cot else "")

    def store_config(self) -> dict[str, Any]:
        """What keys the store (besides model fingerprint and document hash).

        The LoRA, training and sample settings and the augmentation's counts, prompts and
        sampling; its token budgets and retries are operational and recorded per document in
        the manifest instead.
        """
        data = asdict(self)
        data["targets"] = list(self.targets)
        data["augment"] = {k: getattr(self.augment, k) for k in ("rewrites", "qa_pairs", "prompts")}
        data["format"] = "prag-v2"
        return data


def training_prompts(aug: Augmentation, with_cot: bool) -> list[tuple[str, list[str] | None, str]]:
    """(question, passages, answer) per sample, in the reference ``get_train_data``'s order.

    The first ⌈m/2⌉ QA pairs are shown with the passage and then with each rewrite, the rest
    with no passage; with ``with_cot`` the target is the pair's full answer (its short answer
    when the augmentation has none).
    """
    passage = Passage(aug.passage["id"], aug.passage["title"], aug.passage["text"]).as_context()
    contexts = [passage] + list(aug.rewrites)
    with_context = (len(aug.qa) + 1) // 2
    out: list[tuple[str, list[str] | None, str]] = []
    for j, qa in enumerate(aug.qa):
        answer = (qa.get("full_answer") or qa["answer"]) if with_cot else qa["answer"]
        if j < with_context:
            out += [(qa["question"], [c], answer) for c in contexts]
        else:
            out.append((qa["question"], None, answer))
    return out


def tokenize_samples(tokenizer, chat: bool, template: PragTemplate,
                     prompts: Sequence[tuple[str, list[str] | None, str]], max_length: int) -> list[list[int]]:
    """Token ids of each sample: the template's prompt and answer, cut at ``max_length``."""
    return [template.ids(tokenizer, chat, q, passages, answer)[:max_length] for q, passages, answer in prompts]


def document_samples(lm, aug: Augmentation, config: EncodeConfig) -> list[list[int]]:
    """The token ids PRAG trains one document's LoRA on (labels = these ids: :func:`lm_batch`).

    Without QA pairs (``failed_augmentation="plain-text"``, not PRAG) the passage and its
    rewrites are the samples, as plain text.
    """
    if not aug.qa:
        texts = [Passage(aug.passage["id"], aug.passage["title"], aug.passage["text"]).as_context(), *aug.rewrites]
        return [lm.tokenizer.encode(t, add_special_tokens=False)[: config.max_length] for t in texts]
    return tokenize_samples(lm.tokenizer, lm.chat_template, config.template(),
                            training_prompts(aug, config.with_cot), config.max_length)


def lm_batch(ids: Sequence[int], device: Any = "cpu") -> dict[str, torch.Tensor]:
    """One training sample as the reference's ``TrainingData`` feeds it: labels on every input id.

    (The reference pads to 3000 with label -100 and attention 0; with batch 1 and causal
    attention the padded positions change neither the loss nor the gradients, so none is added.)
    """
    input_ids = torch.tensor([list(ids)], device=device)
    return {"input_ids": input_ids, "labels": input_ids.clone()}


@dataclass
class TrainStats:
    samples: int
    tokens: int
    steps: int
    first_loss: float
    final_loss: float
    seconds: float


class DocumentEncoder:
    """Trains per-document LoRAs with peft; every document starts from the same initialisation.

    Use as a context manager (``with DocumentEncoder(lm) as enc: enc.train(aug)``): entering
    wraps the model with peft, leaving unloads the LoRA layers so the model is pristine again.
    """

    def __init__(self, lm, config: EncodeConfig | None = None):
        self.lm = lm
        self.config = config or EncodeConfig()
        self.peft_model = None
        self._init_state: dict[str, torch.Tensor] | None = None

    def __enter__(self) -> "DocumentEncoder":
        from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

        cfg = self.config
        lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=list(cfg.targets), bias="none", task_type="CAUSAL_LM")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            self.peft_model = get_peft_model(self.lm.model, lora)
        self._init_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.peft_model).items()}
        return self

    def __exit__(self, *exc) -> None:
        if self.peft_model is not None:
            self.peft_model.unload()
            self.lm.model.eval()
            self.peft_model = None

    def initial_adapter(self) -> dict[str, torch.Tensor]:
        return from_peft_state_dict(self._init_state or {})

    def train(self, aug: Augmentation) -> tuple[dict[str, torch.Tensor], TrainStats]:
        """One LoRA for one augmented document: (adapter in store format, training stats)."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        if self.peft_model is None:
            raise RuntimeError("use DocumentEncoder as a context manager (with DocumentEncoder(lm) as enc)")
        cfg, model = self.config, self.peft_model
        set_peft_model_state_dict(model, self._init_state)
        samples = document_samples(self.lm, aug, cfg)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
        losses, start = [], time.perf_counter()
        model.train()
        with torch.enable_grad():
            for _ in range(cfg.epochs):
                for ids in samples:
                    optimizer.zero_grad(set_to_none=True)
                    loss = model(**lm_batch(ids, self.lm.device)).loss
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
        model.eval()
        adapter = {k: v.float() for k, v in from_peft_state_dict(get_peft_model_state_dict(model)).items()}
        stats = TrainStats(samples=len(samples), tokens=sum(len(s) for s in samples), steps=len(losses),
                           first_loss=losses[0] if losses else math.nan,
                           final_loss=losses[-1] if losses else math.nan,
                           seconds=time.perf_counter() - start)
        return adapter, stats


@dataclass
class EncodeReport:
    encoded: int = 0
    skipped: int = 0  # already in the store (finished or known unusable): not redone
    repaired: int = 0  # documents whose adapter was damaged (size, checksum or entry) and was redone
    unaugmentable: int = 0  # documents with no adapter: their QA generation never parsed (PRAG skips them)
    incomplete_augmentations: int = 0
    augmentation_failures: int = 0
    augment_seconds: float = 0.0
    train_seconds: float = 0.0
    bytes: int = 0

    def add(self, entry: dict[str, Any]) -> None:
        """Count one finished document from its manifest entry."""
        self.encoded += 1
        self.bytes += entry["bytes"]
        self.augment_seconds += entry["augment_seconds"]
        self.train_seconds += entry["train"]["seconds"]
        self.incomplete_augmentations += int(not entry["augment_complete"])
        self.augmentation_failures += len(entry["augmentation"]["failures"])

    def record(self, store: AdapterStore, content_hash: str, adapter: dict[str, torch.Tensor] | None,
               info: dict[str, Any]) -> None:
        """Store one result of :func:`encode_many`: an adapter, or the skip of an unusable document."""
        if adapter is None:
            store.skip(content_hash, info)
            self.unaugmentable += 1
            self.augmentation_failures += len(info["augmentation"]["failures"])
        else:
            self.add(store.put(content_hash, adapter, info))


def model_dtype(lm) -> str:
    """The dtype a document was augmented and trained in, recorded per manifest entry.

    Not part of the store's key on purpose: adapters trained in float32 may serve a bfloat16
    model (encode once carefully, answer fast), so a store holds one adapter per document; the
    entry says how it was made and a run that must not mix dtypes (the parametric benchmark)
    checks it.
    """
    return str(lm.dtype).removeprefix("torch.")


def encode_many(lm, passages: list[Passage], config: EncodeConfig, encoder: DocumentEncoder,
                augmenter: Augmenter) -> Iterator[tuple[dict[str, torch.Tensor] | None, dict[str, Any]]]:
    """Augment documents as one batch, then train and yield (adapter, manifest info) per passage,
    each as soon as it is trained, so the caller stores it before the next one starts
    (:meth:`EncodeReport.record`). A passage whose augmentation is not usable yields adapter
    None: PRAG skips it rather than training on it. Each document is charged an equal share of
    the batch's augmentation time."""
    t0 = time.perf_counter()
    with encoder.peft_model.disable_adapter():  # augmentation sees the base model
        augs = augmenter.augment_many(passages)
    share = (time.perf_counter() - t0) / len(passages)
    for passage, aug in zip(passages, augs):
        info = {"doc": {"id": passage.id, "title": passage.title, "text": passage.text},
                "augmentation": aug.to_dict(), "augment_complete": aug.complete,
                "augment_config": asdict(config.augment), "augment_batch": len(passages), "augment_seconds": share,
                "model_dtype": model_dtype(lm)}
        if not aug.usable and config.failed_augmentation == "skip":
            yield None, info
            continue
        adapter, stats = encoder.train(aug)
        yield adapter, {**info, "train": asdict(stats)}


def chunks(items: list, size: int) -> Iterator[list]:
    """Consecutive slices of at most ``size`` items (the augmentation batches)."""
    for start in range(0, len(items), max(1, size)):
        yield items[start: start + max(1, size)]


@contextmanager
def encoding_session(lm, config: EncodeConfig) -> Iterator[tuple[DocumentEncoder, Augmenter]]:
    """A peft-wrapped model for training plus an augmenter on the same model."""
    with DocumentEncoder(lm, config) as encoder:
        yield encoder, Augmenter(lm, config.augment)


def pending_passages(passages: Iterable[Passage], store: AdapterStore,
                     progress: Callable[[Passage, str], None] | None = None) -> tuple[EncodeReport, list[Passage]]:
    """Split passages into finished (counted as skipped) and still to encode: what makes encoding resumable."""
    report, todo = EncodeReport(), []
    entries = store.entries()
    for passage in passages:
        entry = entries.get(passage.content_hash)
        status = store.status(passage.content_hash, entry) if entry is not None else "not encoded"
        if status in ("ok", "skipped"):  # a known-unusable augmentation is not retried
            report.skipped += 1
            report.unaugmentable += int(status == "skipped")
            if progress:
                progress(passage, "already stored")
        else:
            report.repaired += int(entry is not None)  # recorded once, damaged or missing since
            todo.append(passage)
    return report, todo


def encode_corpus(lm, passages: Iterable[Passage], store: AdapterStore, config: EncodeConfig | None = None,
                  progress: Callable[[Passage, str], None] | None = None) -> EncodeReport:
    """Encode every passage without a finished adapter in ``store`` (resumable: finished ones skip)."""
    config = config or EncodeConfig()
    report, todo = pending_passages(passages, store, progress)
    if not todo:
        return report
    with encoding_session(lm, config) as (encoder, augmenter):
        for batch in chunks(todo, config.augment.batch_docs):
            for passage, (adapter, info) in zip(batch, encode_many(lm, batch, config, encoder, augmenter)):
                report.record(store, passage.content_hash, adapter, info)
                if progress:
                    progress(passage, "encoded" if adapter is not None else "unaugmentable")
    return report
