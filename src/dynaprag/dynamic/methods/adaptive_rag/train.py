"""Train the MiniLM complexity head on labelled training questions, and write it atomically.

The paper's step (``classifier/run/run_large_train_xl.sh``: ``t5-large``, learning rate 3e-5,
batch 32, 15-35 epochs chosen on the silver validation set) fine-tunes a 770M seq2seq model to emit
the label. Here (deviation, ``adaptive-rag-minilm``): the frozen MiniLM encoder embeds each
question (L2-normalised, 384-d) and a linear head (384 x 3) is trained on the embeddings with
cross-entropy, full batch, Adam; a few hundred questions train in well under a second. The
records are what :mod:`dynaprag.eval.silver_labels` writes (silver labels, then the
inductive-bias labels of the questions no strategy answered; :func:`.labels.combine`), and only
ever training-split questions: the caller states the split, and it is written into
``classifier.json`` with the label counts and the final training loss and accuracy.

>>> import numpy as np
>>> x = np.eye(3, 4, dtype="float32"); head = train_head(x, ["A", "B", "C"], epochs=200)
>>> head.accuracy
1.0
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from dynaprag.config import ConfigError
from dynaprag.dynamic.methods.adaptive_rag.classifier import CONFIG_FILE, HEAD_FILE, KIND
from dynaprag.dynamic.methods.adaptive_rag.labels import LABELS, label_counts
from dynaprag.files import atomic_write_bytes, atomic_write_json

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
DEVIATION = ("MiniLM (all-MiniLM-L6-v2) embeddings + a trained linear head, not the paper's fine-tuned "
             "t5-large (classifier/run/run_large_train_xl.sh)")


@dataclass
class HeadSettings:
    """How the head is trained (ours: the paper trains t5-large, lr 3e-5, 15-35 epochs)."""

    epochs: int = field(default=300, metadata={"help": "full-batch Adam steps", "min": 1, "max": 100_000})
    lr: float = field(default=0.05, metadata={"help": "Adam learning rate", "min": 0.0})
    weight_decay: float = field(default=1e-4, metadata={"help": "L2 penalty on the head", "min": 0.0})
    seed: int = field(default=0, metadata={"help": "initialisation seed"})


@dataclass
class Head:
    """A trained head: ``weight`` (3 x dim), ``bias`` (3), and how training ended."""

    weight: Any
    bias: Any
    loss: float
    accuracy: float  # on the training records themselves


def train_head(vectors, labels: Sequence[str], epochs: int = 300, lr: float = 0.05,
               weight_decay: float = 1e-4, seed: int = 0) -> Head:
    """Fit ``softmax(W x + b)`` to ``labels`` by cross-entropy on the rows of ``vectors``."""
    import torch

    bad = [label for label in labels if label not in LABELS]
    if bad:
        raise ConfigError(f"label {bad[0]!r} is not one of {', '.join(LABELS)}")
    if len(labels) != len(vectors) or not labels:
        raise ConfigError(f"{len(vectors)} questions and {len(labels)} labels: need the same number, at least one")
    x = torch.as_tensor(vectors, dtype=torch.float32)
    y = torch.tensor([LABELS.index(label) for label in labels])
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], len(LABELS))
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
        head.bias.zero_()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = head(x)
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
    return Head(head.weight.detach().clone(), head.bias.detach().clone(), loss, accuracy)


def save_classifier(folder: str | Path, head: Head, meta: Mapping[str, Any]) -> Path:
    """Write ``head.safetensors`` then ``classifier.json`` (each atomically; the JSON, written last,
    is what :func:`~.classifier.load_classifier` looks for, so a killed write leaves no classifier)."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / HEAD_FILE, save({"weight": head.weight.contiguous(), "bias": head.bias.contiguous()}))
    atomic_write_json(folder / CONFIG_FILE, {"kind": KIND, "labels": list(LABELS), "dim": int(head.weight.shape[1]),
                                             "final_loss": head.loss, "train_accuracy": head.accuracy, **meta})
    return folder


def train_classifier(records: Sequence[Mapping[str, Any]], folder: str | Path, *, split: str,
                     encoder: str = DEFAULT_ENCODER, settings: HeadSettings | None = None,
                     meta: Mapping[str, Any] | None = None) -> Path:
    """Embed the records' questions with ``encoder``, train the head, write it to ``folder``.

    ``records`` carry ``question`` and ``label`` (and ``source``: silver or inductive);
    ``split`` says in words which questions they are (written to ``classifier.json``).
    """
    from dynaprag.retrieval.dense import encode, load_encoder

    settings = settings or HeadSettings()
    questions = [str(r["question"]).strip() for r in records]
    vectors = encode(load_encoder(encoder), questions)
    head = train_head(vectors, [r["label"] for r in records], settings.epochs, settings.lr,
                      settings.weight_decay, settings.seed)
    sources = {}
    for r in records:
        sources[r.get("source", "silver")] = sources.get(r.get("source", "silver"), 0) + 1
    return save_classifier(folder, head, {
        "encoder": encoder, "deviation": DEVIATION, "split": split, "questions": len(records),
        "label_counts": label_counts(records), "sources": sources,
        "settings": {"epochs": settings.epochs, "lr": settings.lr, "weight_decay": settings.weight_decay,
                     "seed": settings.seed}, **(meta or {})})
