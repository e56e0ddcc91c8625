"""DyPRAG's parameter translator: a hypernetwork from a document embedding to LoRA A and B.

DyPRAG (Tan et al., 2025, "Dynamic Parametric RAG", §3.2-3.3) replaces PRAG's per-document
training at question time with a translator F'_φ: for every layer l and FFN module, a small
MLP maps the document embedding s (the base model's last-layer hidden state at the passage's
last token) together with the layer index l to that module's LoRA factors (A, B). It is
trained on (document, PRAG adapter) pairs with (Eq. 7-9)

    L = L_pred + λ_kl · KL(P_PRAG-adapter ‖ P_generated) + λ_mse · Σ_modules MSE((A,B)_gen, (A,B)_PRAG)

where L_pred is the language-modelling loss of the model carrying the generated adapter on the
document's augmented samples. Weights used here are the reference code's: λ_kl = 0.01,
λ_mse = 100; hidden width 32, AdamW lr 1e-5. Deviations, for a CPU and a few dozen documents:
the KL is averaged over tokens (the reference sums over tokens, per batch), each step uses one
augmented sample of one document (cycling through its samples across epochs, where the
reference always takes the first), and the A-head bias starts at PRAG's shared LoRA
initialisation (B-head at zero, head weights ~N(0, 1e-7) as in the reference), so an untrained
translator reproduces PRAG's starting point, a zero delta.
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


class ModuleHypernet(nn.Module):
    """(embedding ⊕ layer index) → hidden → (A: r×in, B: out×r) for one layer and module."""

    def __init__(self, embed_dim: int, in_features: int, out_features: int, rank: int, hidden: int, layer: int):
        super().__init__()
        self.rank, self.in_features, self.out_features, self.layer = rank, in_features, out_features, layer
        self.body = nn.Sequential(nn.Linear(embed_dim + 1, hidden), nn.ReLU())
        self.head_a = nn.Linear(hidden, rank * in_features)
        self.head_b = nn.Linear(hidden, out_features * rank)
        for head in (self.head_a, self.head_b):
            nn.init.normal_(head.weight, std=1e-7)
            nn.init.zeros_(head.bias)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([embedding, embedding.new_tensor([float(self.layer)])])
        h = self.body(x)
        return (self.head_a(h).view(self.rank, self.in_features),
                self.head_b(h).view(self.out_features, self.rank))


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

    def start_from(self, adapter: Adapter) -> None:
        """Set the A-head biases to a shared LoRA initialisation (B stays zero)."""
        with torch.no_grad():
            for name in self.names:
                net = self.nets[name.replace(".", "__")]
                net.head_a.bias.copy_(adapter[f"{name}.lora_A"].reshape(-1).float())

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
    """DyPRAG translator training knobs (reference-code defaults)."""

    hidden: int = field(default=32, metadata={"help": "hypernetwork hidden width p (DyPRAG: 32)"})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (DyPRAG: 1e-5)"})
    epochs: int = field(default=1, metadata={"help": "passes over the (document, adapter) pairs"})
    kl_weight: float = field(default=0.01, metadata={"help": "λ_kl on KL(PRAG adapter ‖ generated)"})
    mse_weight: float = field(default=100.0, metadata={"help": "λ_mse on the parameter MSE"})
    max_tokens: int = field(default=512, metadata={"help": "tokens per training sample / embedded passage"})
    seed: int = field(default=0, metadata={"help": "shuffling and initialisation seed"})


@dataclass
class TrainingPair:
    """One (document, PRAG adapter) pair with the document's augmented training samples."""

    passage: Passage
    adapter: dict[str, torch.Tensor]
    samples: list[list[int]]


def translator_loss(lm, translator: ParameterTranslator, embedding: torch.Tensor, pair: TrainingPair,
                    sample: list[int], scaling: float, config: TranslatorConfig) -> dict[str, torch.Tensor]:
    """DyPRAG's loss (module docstring) for one document and one augmented sample."""
    import torch.nn.functional as F

    from dynaprag.parametric.lora import applied, combine

    ids = torch.tensor([sample], device=lm.device)
    with torch.no_grad(), applied(lm.model, combine([pair.adapter], scaling)):
        target = lm.model(input_ids=ids, use_cache=False).logits.float()
    generated = translator(embedding)
    with applied(lm.model, combine([generated], scaling)):
        out = lm.model(input_ids=ids, labels=ids, use_cache=False)
    logp = F.log_softmax(out.logits.float(), dim=-1)
    kl = F.kl_div(logp, F.log_softmax(target, dim=-1), log_target=True, reduction="none").sum(-1).mean()
    mse = sum(F.mse_loss(generated[k], pair.adapter[k].float()) for k in generated)
    total = out.loss + config.kl_weight * kl + config.mse_weight * mse
    return {"total": total, "lm": out.loss.detach(), "kl": kl.detach(), "mse": mse.detach()}


def train_translator(lm, pairs: Sequence[TrainingPair], scaling: float, targets: Sequence[str], rank: int,
                     config: TranslatorConfig | None = None, init_adapter: Adapter | None = None,
                     translator: ParameterTranslator | None = None, progress=None
                     ) -> tuple[ParameterTranslator, list[dict[str, float]]]:
    """Train a translator on PRAG pairs; returns it and the per-step loss curve.

    The base model is frozen (its parameters' ``requires_grad`` is restored afterwards); the
    generated adapter enters the model through the same forward hooks used at inference.
    """
    import random
    import time

    config = config or TranslatorConfig()
    if not pairs:
        raise ValueError("no (document, adapter) pairs to train the translator on: run `dynaprag encode` first")
    torch.manual_seed(config.seed)
    if translator is None:
        translator = ParameterTranslator.for_model(lm.model, targets, rank, config.hidden)
        if init_adapter is not None:
            translator.start_from(init_adapter)
    embeddings = embed_passages(lm, [p.passage for p in pairs], config.max_tokens)
    optimizer = torch.optim.AdamW(translator.parameters(), lr=config.learning_rate)
    frozen = [(p, p.requires_grad) for p in lm.model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    curve: list[dict[str, float]] = []
    rng = random.Random(config.seed)
    start = time.perf_counter()
    translator.train()
    try:
        with torch.enable_grad():
            for epoch in range(config.epochs):
                order = list(range(len(pairs)))
                rng.shuffle(order)
                for i in order:
                    pair = pairs[i]
                    sample = pair.samples[epoch % len(pair.samples)][: config.max_tokens]
                    optimizer.zero_grad(set_to_none=True)
                    losses = translator_loss(lm, translator, embeddings[i], pair, sample, scaling, config)
                    losses["total"].backward()
                    optimizer.step()
                    row = {"step": len(curve) + 1, "epoch": epoch + 1, "doc": pair.passage.id,
                           "seconds": time.perf_counter() - start,
                           **{f"{k}_loss": float(v.detach()) for k, v in losses.items()}}
                    curve.append(row)
                    if progress:
                        progress(row)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        translator.eval()
    return translator, curve


def translator_metadata(lm, config: TranslatorConfig, scaling: float, targets: Sequence[str]) -> dict[str, str]:
    return {"model_fingerprint": lm.fingerprint, "scaling": str(scaling), "targets": json.dumps(list(targets)),
            "config": json.dumps(asdict(config))}


def pairs_from_store(lm, store, encode_config) -> list[TrainingPair]:
    """(document, PRAG adapter, augmented samples) for every finished adapter in ``store``."""
    from dynaprag.parametric.augment import Augmentation
    from dynaprag.parametric.encode import document_samples

    pairs = []
    for content_hash, entry in sorted(store.entries().items()):
        if not store.has(content_hash):
            continue
        doc = entry["doc"]
        aug = Augmentation.from_dict(entry["augmentation"])
        samples = document_samples(lm, aug, encode_config)
        pairs.append(TrainingPair(Passage(doc["id"], doc["title"], doc["text"]), store.get(content_hash), samples))
    return pairs
