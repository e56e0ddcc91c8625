"""A translator's training state on disk, so that a killed training resumes where it stopped.

At the reference's settings one DyPRAG translator step costs two forwards of a 3000-position
sample (``kl_reduction="padded-sum"``); on a CPU a run over a few dozen documents takes hours.
Without a saved state, a killed run would start over. The state holds the translator's weights,
AdamW's moments and step counts, and the loss curve so far, in one safetensors file (no pickle),
written atomically.

The state is keyed by everything the training depends on (:func:`training_identity`). A state
from other documents, samples or settings is refused with the file named; it is never silently
continued. Resuming replays the epoch shuffles from the seed and skips the steps already taken,
so a resumed run ends with the same weights as one that was never interrupted
(``tests/test_parametric_translator.py`` checks this on the real model).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

FORMAT = "dynaprag-translator-training-v1"


class TrainingStateError(ValueError):
    """A saved training state that cannot be resumed; the message names the file and the fix."""


def training_identity(pairs: Sequence, config, scaling: float, targets: Sequence[str], rank: int,
                      model: str = "") -> str:
    """A hash of what the steps depend on: the documents, their samples and teacher adapters, the
    settings, the model."""
    h = hashlib.sha256()
    h.update(json.dumps({"config": asdict(config), "scaling": float(scaling), "targets": list(targets),
                         "rank": rank, "model": model}, sort_keys=True).encode())
    for pair in pairs:
        h.update(pair.passage.content_hash.encode())
        h.update(json.dumps(pair.samples).encode())
        for key in sorted(pair.adapter):
            h.update(key.encode())
            h.update(pair.adapter[key].detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def save_state(path: str | Path, identity: str, translator: torch.nn.Module, optimizer: torch.optim.Optimizer,
               curve: list[dict[str, Any]]) -> None:
    """Write the state after ``len(curve)`` steps (atomically: a kill leaves the previous state)."""
    from safetensors.torch import save

    from dynaprag.files import atomic_write_bytes

    tensors = {f"net.{k}": v.detach().contiguous() for k, v in translator.state_dict().items()}
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for name, value in slots.items():
            tensors[f"opt.{index}.{name}"] = torch.as_tensor(value).detach().reshape(-1).contiguous()
    meta = {"format": FORMAT, "identity": identity, "steps_done": str(len(curve)), "curve": json.dumps(curve)}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_state(path: str | Path, identity: str, translator: torch.nn.Module,
               optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Restore a saved state into ``translator`` and ``optimizer``; returns its loss curve
    (``[]`` when there is no file: a fresh start)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        return []
    fix = "delete it to start over, or give this training another state file"
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        curve = json.loads(meta["curve"])
    except (SafetensorError, ValueError, KeyError, OSError) as exc:
        raise TrainingStateError(f"{path}: not a readable translator training state ({exc}); {fix}") from exc
    if meta.get("format") != FORMAT or meta.get("identity") != identity:
        raise TrainingStateError(f"{path}: holds the training of other documents or settings; {fix}")
    translator.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")})
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            # saved flat: a step count is a 0-d tensor, the moments have their parameter's shape
            shape = () if name == "step" else params[int(index)].shape
            state.setdefault(int(index), {})[name] = value.reshape(shape)
    opt = optimizer.state_dict()
    opt["state"] = state
    optimizer.load_state_dict(opt)
    return curve

