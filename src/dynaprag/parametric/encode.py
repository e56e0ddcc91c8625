"""Offline parametric encoding: one LoRA per document, trained with peft on the real model.

PRAG (Su et al., SIGIR 2025, §3.2.2 "Parametric Knowledge Encoding", Eq. 4) trains, for each
document, a LoRA ΔΘ on the FFN projections by minimising the language-modelling loss over its
augmented samples [d_k ⊕ q_j ⊕ a_j]. Defaults are PRAG's: rank 2, alpha 32, dropout 0, lr 3e-4,
1 epoch, batch 1, loss over the whole sample, gate/up/down projections, and every document
starting from the same fixed initialisation (PRAG saves one ``base_weight`` adapter; here it is
regenerated bit-for-bit from ``init_seed`` so Ray workers share it without a file).

Samples follow the reference code's recipe: the first ⌈m/2⌉ QA pairs are shown once with the
passage and once with each rewrite as context, the remaining pairs without context (1 rewrite
and 3 pairs give 5 samples). Deviation: the answer is written as "So the answer is A." so that
it matches the answer form of our prompts; a document whose augmentation failed entirely is
trained on its passage (and rewrite) as plain text, and the failure is recorded in the store.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from dynaprag.corpus import Passage
from dynaprag.lm.prompts import format_passages
from dynaprag.parametric.adapters import AdapterStore
from dynaprag.parametric.augment import AugmentConfig, Augmentation, Augmenter
from dynaprag.parametric.lora import DEFAULT_TARGETS, from_peft_state_dict


@dataclass
class EncodeConfig:
    """LoRA and training settings of PRAG's offline encoding (they key the adapter store)."""

    rank: int = field(default=2, metadata={"help": "LoRA rank r (PRAG: 2)"})
    alpha: float = field(default=32.0, metadata={"help": "LoRA alpha; scaling = alpha / r (PRAG: 32)"})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (PRAG: 0)"})
    targets: tuple[str, ...] = field(default=DEFAULT_TARGETS, metadata={"help": "projections that get a LoRA (PRAG: FFN gate/up/down)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate (PRAG: 3e-4)"})
    epochs: int = field(default=1, metadata={"help": "passes over the document's samples (PRAG: 1)"})
    max_length: int = field(default=1024, metadata={"help": "tokens per training sample (truncated beyond)"})
    init_seed: int = field(default=42, metadata={"help": "seed of the shared LoRA initialisation"})
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"help": "document augmentation"})

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def store_config(self) -> dict[str, Any]:
        """What keys the store (besides model fingerprint and document hash).

        The LoRA and training settings and the augmentation's counts; the augmentation's token
        budgets and retries are operational and recorded per document in the manifest instead.
        """
        data = asdict(self)
        data["targets"] = list(self.targets)
        data["augment"] = {"rewrites": self.augment.rewrites, "qa_pairs": self.augment.qa_pairs}
        data["format"] = "prag-v1"
        return data


def training_texts(aug: Augmentation) -> list[tuple[str, str | None]]:
    """(user prompt, answer) pairs per PRAG's recipe; answer None = plain-text LM sample."""
    passage = Passage(aug.passage["id"], aug.passage["title"], aug.passage["text"])
    contexts = [passage] + [Passage(passage.id, passage.title, r) for r in aug.rewrites]
    with_context = (len(aug.qa) + 1) // 2
    samples: list[tuple[str, str | None]] = []
    for j, qa in enumerate(aug.qa):
        answer = f"So the answer is {qa['answer']}."
        if j < with_context:
            samples += [(format_passages([c]) + f"Question: {qa['question']}", answer) for c in contexts]
        else:
            samples.append((f"Question: {qa['question']}", answer))
    if not aug.qa:
        samples = [(c.as_context(), None) for c in contexts]
    return samples


def tokenize_samples(tokenizer, chat: bool, texts: Sequence[tuple[str, str | None]], max_length: int) -> list[list[int]]:
    """Token ids of each sample, in the model's chat format when it has one."""
    out = []
    for prompt, answer in texts:
        if answer is None:
            ids = tokenizer.encode(prompt, add_special_tokens=False)
        elif chat:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                tokenize=True, add_generation_prompt=False)
            ids = list(ids["input_ids"]) if isinstance(ids, dict) or hasattr(ids, "keys") else list(ids)
        else:
            ids = tokenizer.encode(f"{prompt}\nAnswer: {answer}", add_special_tokens=False)
        out.append(ids[:max_length])
    return out


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
        samples = tokenize_samples(self.lm.tokenizer, self.lm.chat_template, training_texts(aug), cfg.max_length)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
        losses, start = [], time.perf_counter()
        model.train()
        with torch.enable_grad():
            for _ in range(cfg.epochs):
                for ids in samples:
                    input_ids = torch.tensor([ids], device=self.lm.device)
                    optimizer.zero_grad(set_to_none=True)
                    loss = model(input_ids=input_ids, labels=input_ids).loss
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
    skipped: int = 0
    repaired: int = 0  # documents whose adapter was damaged (size, checksum or entry) and was redone
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


def encode_many(lm, passages: list[Passage], config: EncodeConfig, encoder: DocumentEncoder,
                augmenter: Augmenter) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """Augment documents as one batch, then train and yield (adapter, manifest info) per passage,
    each as soon as it is trained, so the caller stores it before the next one starts. Each
    document is charged an equal share of the batch's augmentation time."""
    t0 = time.perf_counter()
    with encoder.peft_model.disable_adapter():  # augmentation sees the base model
        augs = augmenter.augment_many(passages)
    share = (time.perf_counter() - t0) / len(passages)
    for passage, aug in zip(passages, augs):
        adapter, stats = encoder.train(aug)
        yield adapter, {"doc": {"id": passage.id, "title": passage.title, "text": passage.text},
                        "augmentation": aug.to_dict(), "augment_complete": aug.complete,
                        "augment_config": asdict(config.augment), "augment_batch": len(passages),
                        "train": asdict(stats), "augment_seconds": share}


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
        if status == "ok":
            report.skipped += 1
            if progress:
                progress(passage, "skipped")
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
                report.add(store.put(passage.content_hash, adapter, info))
                if progress:
                    progress(passage, "encoded")
    return report
