"""DyPRAG's parameter translator: a hypernetwork from a document embedding to LoRA A and B.

DyPRAG (Tan et al., 2025, "Dynamic Parametric RAG", §3.2-3.3) replaces PRAG's per-document
training at question time with a translator F'_φ: for every layer l and FFN module, small
MLPs map the document embedding s (the base model's last-layer hidden state at the passage's
last token) together with the layer index l to that module's LoRA factors (A, B). It is
trained on (document, PRAG adapter) pairs with (Eq. 7-9)

    L = L_pred + λ_kl · KL(P_PRAG-adapter ‖ P_generated) + λ_mse · Σ_modules MSE((A,B)_gen, (A,B)_PRAG)

where L_pred is the language-modelling loss of the model carrying the generated adapter on
one augmented sample of the document. As the reference code (Trae1ounG/DyPRAG @8c999be,
``src/projector.py``, ``src/train_dyprag.py``, ``src/utils.py``) does, by default:

- separate A and B networks per layer and module, each ``Linear(d+1 → 32, no bias) → ReLU →
  Linear(→ r·dim, no bias)``, every weight drawn from N(0, 1e-7);
- the generated adapter is applied as ``delta = B @ A`` with no α/r, in training and at
  inference (``delta_scale="reference"``), while the PRAG teacher and the MSE targets are PRAG
  adapters that peft applies with α/r = 16; ``delta_scale="alpha-over-r"`` applies α/r to the
  generated adapter too;
- λ_kl = 0.01 on ``kl_div(log_softmax(student), softmax(teacher), "batchmean")`` over the
  sample padded to 3000 positions with batch 1, i.e. the KL *summed* over every position, the
  pad positions included (``kl_reduction="padded-sum"``; "sum" sums over real tokens only,
  "mean" averages them: 1/n of "sum", which weakens the KL term about 3000x against the default);
- λ_mse = 100 on the sum over modules of the mean squared error; AdamW lr 1e-5; one step per
  document on its first augmented sample (``samples="first"``; "cycle" walks its samples).

Deviations: the embedded text is the passage with its title (``Passage.as_context()``), cut
at ``max_tokens`` (512; the reference: the bare passage, up to 3000); the reference trains on
separate "alignment" data, here on whichever store the caller gives — the benchmark keeps it
disjoint from the questions it evaluates.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from dynaprag.corpus import Passage
from dynaprag.parametric.lora import Adapter, target_modules


def _mlp(embed_dim: int, hidden: int, out: int) -> nn.Sequential:
    """``Linear(d+1 → hidden, no bias) → ReLU → Linear(→ out, no bias)``, weights N(0, 1e-7) (reference)."""
    net = nn.Sequential(nn.Linear(embed_dim + 1, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, out, bias=False))
    for layer in (net[0], net[2]):
        nn.init.normal_(layer.weight, std=1e-7)
    return net


class ModuleHypernet(nn.Module):
    """(embedding ⊕ layer index) → A (r×in) and, by a separate network, → B (out×r), for one module."""

    def __init__(self, embed_dim: int, in_features: int, out_features: int, rank: int, hidden: int, layer: int):
        super().__init__()
        self.rank, self.in_features, self.out_features, self.layer = rank, in_features, out_features, layer
        self.net_a = _mlp(embed_dim, hidden, rank * in_features)
        self.net_b = _mlp(embed_dim, hidden, out_features * rank)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([embedding, embedding.new_tensor([float(self.layer)])])
        return (self.net_a(x).view(self.rank, self.in_features),
                self.net_b(x).view(self.out_features, self.rank))


class ParameterTranslator(nn.Module):
    """One :class:`ModuleHypernet` per targeted projection; ``forward(s)`` returns an adapter dict."""

    def __init__(self, shapes: Mapping[str, tuple[int, int]], embed_dim: int, rank: int = 2, hidden: int = 32):
        super().__init__()
        self.names = sorted(shapes)
        self.embed_dim, self.rank, self.hidden = embed_dim, rank, hidden
        self.nets = nn.ModuleDict()
        for name in self.names:
            out_f, in_f = shapes[name]
            layer = int(m.group(1)) if (m := re.search(r"\.(\d+)\.", name)) else 0
            self.nets[name.replace(".", "__")] = ModuleHypernet(embed_dim, in_f, out_f, rank, hidden, layer)

    @classmethod
    def for_model(cls, model: nn.Module, targets: Sequence[str], rank: int = 2, hidden: int = 32) -> "ParameterTranslator":
        """A translator sized for ``model``'s projections (works for any decoder exposing them)."""
        shapes = {name: tuple(mod.weight.shape) for name, mod in target_modules(model, targets).items()}
        return cls(shapes, model.config.hidden_size, rank, hidden)

    def forward(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.names:
            a, b = self.nets[name.replace(".", "__")](embedding.float())
            out[f"{name}.lora_A"], out[f"{name}.lora_B"] = a, b
        return out

    def save(self, path, metadata: Mapping[str, str]) -> None:
        """Safetensors with the shapes and settings in the metadata (atomic)."""
        import os

        from safetensors.torch import save_file

        meta = {"shapes": json.dumps({n: [self.nets[n.replace(".", "__")].out_features,
                                          self.nets[n.replace(".", "__")].in_features] for n in self.names}),
                "embed_dim": str(self.embed_dim), "rank": str(self.rank), "hidden": str(self.hidden), **metadata}
        tmp = f"{path}.tmp-{os.getpid()}"
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, tmp, metadata=meta)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> tuple["ParameterTranslator", dict[str, str]]:
        """A saved translator and its metadata (safetensors only, never pickle)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if "shapes" not in meta:
            raise ValueError(f"{path}: not a dynaprag translator (no 'shapes' metadata)")
        shapes = {k: tuple(v) for k, v in json.loads(meta["shapes"]).items()}
        net = cls(shapes, int(meta["embed_dim"]), int(meta["rank"]), int(meta["hidden"]))
        net.load_state_dict(load_file(str(path)))
        net.eval()
        return net, meta


@torch.inference_mode()
def embed_passages(lm, passages: Sequence[Passage], max_tokens: int = 512) -> torch.Tensor:
    """DyPRAG's document embedding: last-layer hidden state at each passage's last token, (n, d)."""
    rows = []
    for passage in passages:
        ids = lm.tokenizer.encode(passage.as_context(), add_special_tokens=False)[:max_tokens]
        out = lm.model(input_ids=torch.tensor([ids], device=lm.device), output_hidden_states=True,
                       use_cache=False, logits_to_keep=1)
        rows.append(out.hidden_states[-1][0, -1].float())
    return torch.stack(rows)


def average_adapters(adapters: Sequence[Adapter]) -> dict[str, torch.Tensor]:
    """DyPRAG's multi-passage combination: the element-wise mean of the generated A's and B's.

    (The reference inference code averages the translator outputs of the k passages; unlike
    PRAG's sum of deltas this keeps rank r.)
    """
    return {key: torch.stack([a[key] for a in adapters]).mean(0) for key in adapters[0]}


# -- training -------------------------------------------------------------------------------


@dataclass
class TranslatorConfig:
    """DyPRAG translator training knobs (reference-code defaults; see the module docstring)."""

    hidden: int = field(default=32, metadata={"help": "hypernetwork hidden width p (DyPRAG: 32)",
                                              "max": 4096})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (DyPRAG: 1e-5)"})
    epochs: int = field(default=1, metadata={"help": "passes over the (document, adapter) pairs",
                                             "max": 1000})
    kl_weight: float = field(default=0.01, metadata={"help": "λ_kl on KL(PRAG adapter ‖ generated) (DyPRAG: 0.01)"})
    mse_weight: float = field(default=100.0, metadata={"help": "λ_mse on the parameter MSE (DyPRAG: 100)"})
    kl_reduction: str = field(default="padded-sum", metadata={
        "help": "padded-sum: summed over the sample padded to kl_pad_to positions (DyPRAG); sum: over real "
                "tokens; mean: averaged over real tokens"})
    kl_pad_to: int = field(default=3000, metadata={"help": "positions of the padded sample (DyPRAG: 3000)",
                                                   "max": 32768})
    delta_scale: str = field(default="reference", metadata={
        "help": "reference: generated delta = B @ A (DyPRAG); alpha-over-r: scaled like the PRAG adapters"})
    samples: str = field(default="first", metadata={
        "help": "first: each document's first augmented sample (DyPRAG); cycle: a different one each epoch"})
    sample_tokens: int = field(default=3000, metadata={"help": "tokens per training sample (DyPRAG: 3000)",
                                                       "max": 32768})
    max_tokens: int = field(default=512, metadata={"help": "passage tokens embedded (DyPRAG: 3000)",
                                                   "max": 32768})
    loss_chunk: int = field(default=256, metadata={
        "help": "positions per chunk of the output head and losses, with the decoder's activations recomputed "
                "in the backward pass (parametric/chunked_loss.py: the same losses in a fraction of the memory, "
                "needed for padded-sum); 0: the whole sample's logits at once, every activation kept (faster for "
                "short unpadded samples: bench/translator.py)", "max": 32768})
    seed: int = field(default=0, metadata={"help": "shuffling and initialisation seed"})

    def __post_init__(self) -> None:
        choices = {"kl_reduction": ("padded-sum", "sum", "mean"), "delta_scale": ("reference", "alpha-over-r"),
                   "samples": ("first", "cycle")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"translator.{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.loss_chunk < 0:
            raise ValueError(f"translator.loss_chunk must be 0 (no chunks) or more, not {self.loss_chunk}")

    def generated_scale(self, prag_scaling: float) -> float:
        """The factor the generated B @ A is applied with (1 in the reference)."""
        return 1.0 if self.delta_scale == "reference" else float(prag_scaling)


def kl_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: str) -> torch.Tensor:
    """KL(P_teacher ‖ P_student) over (batch, positions, vocab) logits, as DyPRAG's Eq. 8 term.

    ``"padded-sum"`` and ``"sum"`` are ``F.kl_div(..., reduction="batchmean")`` (the sum over
    positions and vocabulary, divided by the batch size; the caller decides whether pad
    positions are in the logits); ``"mean"`` also divides by the number of positions.
    """
    import torch.nn.functional as F

    kl = F.kl_div(F.log_softmax(student_logits.float(), dim=-1), F.log_softmax(teacher_logits.float(), dim=-1),
                  log_target=True, reduction="batchmean")
    return kl / student_logits.shape[1] if reduction == "mean" else kl


@dataclass
class TrainingPair:
    """One (document, PRAG adapter) pair with the document's augmented training samples."""

    passage: Passage
    adapter: dict[str, torch.Tensor]
    samples: list[list[int]]


def translator_loss(lm, translator: ParameterTranslator, embedding: torch.Tensor, pair: TrainingPair,
                    sample: list[int], scaling: float, config: TranslatorConfig,
                    backward: bool = False) -> dict[str, torch.Tensor]:
    """DyPRAG's loss (module docstring) for one document and one augmented sample.

    ``scaling`` is PRAG's α/r, with which the teacher adapter is applied; the generated one is
    applied with :meth:`TranslatorConfig.generated_scale`. With ``backward`` the gradients are
    computed here, while the generated adapter is still applied: with ``config.loss_chunk`` the
    backward pass recomputes layers that must see it (:mod:`dynaprag.parametric.chunked_loss`).
    The returned losses are then detached.
    """
    from contextlib import nullcontext

    import torch.nn.functional as F

    from dynaprag.parametric.chunked_loss import (check_head, chunked_lm_and_kl, final_hidden,
                                                  layer_checkpointing)
    from dynaprag.parametric.lora import applied, combine

    n = len(sample)
    width = max(n, config.kl_pad_to) if config.kl_reduction == "padded-sum" else n
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([list(sample) + [pad] * (width - n)], device=lm.device)
    mask = torch.tensor([[1] * n + [0] * (width - n)], device=lm.device)
    labels = torch.tensor([list(sample) + [-100] * (width - n)], device=lm.device)
    if config.loss_chunk:
        check_head(lm.model, ids[:, :n])
    with torch.no_grad(), applied(lm.model, combine([pair.adapter], scaling)):
        teacher = (final_hidden(lm.model, ids, mask) if config.loss_chunk
                   else lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits)
    generated = translator(embedding)
    recompute = layer_checkpointing(lm.model) if config.loss_chunk else nullcontext()
    with applied(lm.model, combine([generated], config.generated_scale(scaling))), recompute:
        if config.loss_chunk:
            hidden = final_hidden(lm.model, ids, mask)
            lm_loss, kl = chunked_lm_and_kl(lm.model, hidden, teacher, labels, config.loss_chunk)
            kl = kl / width if config.kl_reduction == "mean" else kl
        else:
            out = lm.model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
            lm_loss, kl = out.loss, kl_term(out.logits, teacher, config.kl_reduction)
        mse = sum(F.mse_loss(generated[k], pair.adapter[k].float()) for k in generated)
        total = lm_loss + config.kl_weight * kl + config.mse_weight * mse
        if backward:
            total.backward()
    return {"total": total.detach() if backward else total, "lm": lm_loss.detach(), "kl": kl.detach(),
            "mse": mse.detach()}


def train_translator(lm, pairs: Sequence[TrainingPair], scaling: float, targets: Sequence[str], rank: int,
                     config: TranslatorConfig | None = None, init_adapter: Adapter | None = None,
                     translator: ParameterTranslator | None = None, progress=None,
                     state_path=None, save_every: float = 300.0
                     ) -> tuple[ParameterTranslator, list[dict[str, float]]]:
    """Train a translator on PRAG pairs; returns it and the per-step loss curve.

    ``scaling`` is PRAG's α/r (the teacher adapters'). ``init_adapter`` is accepted for older
    callers and unused: the reference translator starts from small random weights, not from
    PRAG's initialisation. The base model is frozen (its parameters' ``requires_grad`` is restored afterwards); the
    generated adapter enters the model through the same forward hooks used at inference.

    With ``state_path`` the training is resumable (:mod:`dynaprag.parametric.training_state`):
    the state is saved at most every ``save_every`` seconds and after the last step, and a
    saved state of the same training is resumed. The curve's ``seconds`` count training time
    over every run of it. The caller deletes the state once it has saved the translator.
    """
    import random
    import time

    from dynaprag.parametric.training_state import load_state, save_state, training_identity

    config = config or TranslatorConfig()
    if not pairs:
        raise ValueError("no (document, adapter) pairs to train the translator on: run `dynaprag encode` first")
    torch.manual_seed(config.seed)
    if translator is None:
        translator = ParameterTranslator.for_model(lm.model, targets, rank, config.hidden)
    embeddings = embed_passages(lm, [p.passage for p in pairs], config.max_tokens)
    optimizer = torch.optim.AdamW(translator.parameters(), lr=config.learning_rate)
    frozen = [(p, p.requires_grad) for p in lm.model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    identity = training_identity(pairs, config, scaling, targets, rank, getattr(lm, "fingerprint", ""))
    curve: list[dict[str, float]] = load_state(state_path, identity, translator, optimizer) if state_path else []
    resumed, total = len(curve), len(pairs) * config.epochs
    rng = random.Random(config.seed)
    start, saved = time.perf_counter(), time.perf_counter()
    before = curve[-1]["seconds"] if curve else 0.0
    translator.train()
    try:
        with torch.enable_grad():
            step = 0
            for epoch in range(config.epochs):
                order = list(range(len(pairs)))
                rng.shuffle(order)  # replayed on resume, so the remaining steps are the same
                for i in order:
                    step += 1
                    if step <= resumed:
                        continue
                    pair = pairs[i]
                    pick = 0 if config.samples == "first" else epoch % len(pair.samples)
                    sample = pair.samples[pick][: config.sample_tokens]
                    optimizer.zero_grad(set_to_none=True)
                    losses = translator_loss(lm, translator, embeddings[i], pair, sample, scaling, config,
                                             backward=True)
                    optimizer.step()
                    row = {"step": step, "epoch": epoch + 1, "doc": pair.passage.id,
                           "seconds": before + time.perf_counter() - start,
                           **{f"{k}_loss": float(v.detach()) for k, v in losses.items()}}
                    curve.append(row)
                    if state_path and (step == total or time.perf_counter() - saved >= save_every):
                        save_state(state_path, identity, translator, optimizer, curve)
                        saved = time.perf_counter()
                    if progress:
                        progress(row)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        translator.eval()
    return translator, curve


def translator_metadata(lm, config: TranslatorConfig, scaling: float, targets: Sequence[str]) -> dict[str, str]:
    """What a saved translator carries: its model, the scale its adapters apply with, its settings."""
    return {"model_fingerprint": lm.fingerprint, "scaling": str(config.generated_scale(scaling)),
            "targets": json.dumps(list(targets)), "config": json.dumps(asdict(config))}


def pairs_from_store(lm, store, encode_config) -> list[TrainingPair]:
    """(document, PRAG adapter, augmented samples) for every finished adapter in ``store``."""
    from dynaprag.parametric.augment import Augmentation
    from dynaprag.parametric.encode import document_samples

    pairs = []
    for content_hash, entry in sorted(store.entries().items()):
        if not store.has(content_hash) or "doc" not in entry:  # no text: an adapter repaired without its entry
            continue
        doc = entry["doc"]
        aug = Augmentation.from_dict(entry["augmentation"])
        samples = document_samples(lm, aug, encode_config)
        pairs.append(TrainingPair(Passage(doc["id"], doc["title"], doc["text"]), store.get(content_hash), samples))
    return pairs
