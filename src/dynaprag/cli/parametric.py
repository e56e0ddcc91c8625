"""``dynaprag encode`` (PRAG's offline phase) and ``dynaprag translator train`` (DyPRAG's)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer


def select_passages(corpus: str, ids: list[str], limit: Optional[int]):
    """Passages of ``corpus`` restricted to ``ids`` (in corpus order) and/or the first ``limit``."""
    from dynaprag.corpora import read_passages

    wanted = set(ids)
    out = []
    for passage in read_passages(corpus):
        if wanted and passage.id not in wanted:
            continue
        out.append(passage)
        if limit is not None and len(out) >= limit:
            break
    missing = wanted - {p.id for p in out}
    if missing and limit is None:
        raise ValueError(f"{corpus}: no passages with ids {sorted(missing)[:5]}")
    return out


def run_encode(corpus: str, ids: list[str], limit: Optional[int], store_root: Optional[str], model: str,
               dtype: str, use_ray: bool, workers: int, overrides: list[str], show_progress: bool = True):
    """The body of ``dynaprag encode``: returns (store, report)."""
    from tqdm import tqdm

    from dynaprag.config import apply_overrides
    from dynaprag.lm import load_model
    from dynaprag.parametric.encode import EncodeConfig, encode_corpus
    from dynaprag.parametric.stores import default_store_root, open_store

    config = apply_overrides(EncodeConfig(), overrides)
    passages = select_passages(corpus, ids, limit)
    lm = load_model(model, dtype=dtype)
    store = open_store(store_root or default_store_root(), lm, config)
    bar = tqdm(total=len(passages), desc="encode", unit="doc", disable=not show_progress)

    def progress(passage, status):
        bar.update(1)
        bar.set_postfix_str(f"{status} {passage.id}")

    if use_ray:
        from dynaprag.parametric.distributed import RayConfig, encode_with_ray

        report = encode_with_ray(model, dtype, lm.fingerprint, passages, store, config,
                                 RayConfig(workers=workers), progress)
    else:
        report = encode_corpus(lm, passages, store, config, progress)
    bar.close()
    return store, report


def run_translator_train(store_dir: str, out: str, model: str, dtype: str, overrides: list[str],
                         show_progress: bool = True) -> dict:
    """The body of ``dynaprag translator train``: trains on every adapter in the store."""
    from tqdm import tqdm

    from dynaprag.config import apply_overrides
    from dynaprag.lm import load_model
    from dynaprag.parametric.encode import EncodeConfig
    from dynaprag.parametric.stores import open_store
    from dynaprag.parametric.translator import (TranslatorConfig, pairs_from_store, train_translator,
                                                translator_metadata)

    config = apply_overrides(TranslatorConfig(), overrides)
    lm = load_model(model, dtype=dtype)
    encode_config = EncodeConfig()
    store = open_store(store_dir, lm, encode_config)
    pairs = pairs_from_store(lm, store, encode_config)
    bar = tqdm(total=len(pairs) * config.epochs, desc="translator", unit="step", disable=not show_progress)

    def progress(row):
        bar.update(1)
        bar.set_postfix_str(f"loss {row['total_loss']:.3f}")

    from dynaprag.parametric.encode import DocumentEncoder

    with DocumentEncoder(lm, encode_config) as enc:
        init = enc.initial_adapter()
    start = time.perf_counter()
    net, curve = train_translator(lm, pairs, encode_config.scaling, encode_config.targets, encode_config.rank,
                                  config, init_adapter=init, progress=progress)
    seconds = time.perf_counter() - start
    bar.close()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    net.save(out_dir / "translator.safetensors", translator_metadata(lm, config, encode_config.scaling,
                                                                      encode_config.targets))
    summary = {"pairs": len(pairs), "steps": len(curve), "seconds": seconds, "curve": curve}
    tmp = out_dir / "loss_curve.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out_dir / "loss_curve.json")
    return summary


def register(app: typer.Typer) -> None:
    """Add ``encode`` and ``translator train`` to the ``dynaprag`` command."""

    @app.command("encode")
    def encode(
        corpus: str = typer.Option(..., "--corpus", help="passages .jsonl or DPR .tsv"),
        ids: list[str] = typer.Option([], "--ids", help="only these passage ids (repeatable)"),
        limit: Optional[int] = typer.Option(None, "--limit", help="at most N passages"),
        store: Optional[str] = typer.Option(None, "--store", help="adapter store root (default $DYNAPRAG_CACHE/adapters)"),
        model: str = typer.Option("smollm2-135m", "--model", help="model alias, HF id or folder"),
        dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | auto"),
        ray: bool = typer.Option(False, "--ray", help="distribute over a Ray cluster (local if none)"),
        workers: int = typer.Option(2, "--workers", help="Ray actors"),
        set_: list[str] = typer.Option([], "--set", help="EncodeConfig override key=value, e.g. rank=4"),
    ) -> None:
        """PRAG offline phase: augment each passage and train its LoRA (resumable: finished docs skip)."""
        from dynaprag.cli import console, fail
        from dynaprag.config import ConfigError

        try:
            st, report = run_encode(corpus, ids, limit, store, model, dtype, ray, workers, set_)
        except (ConfigError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        console.print(f"encoded {report.encoded}, skipped {report.skipped} (already in store), "
                      f"{report.incomplete_augmentations} incomplete augmentations "
                      f"({report.augmentation_failures} failed attempts); store {st.dir} holds {len(st)} adapters")

    translator_app = typer.Typer(no_args_is_help=True, help="DyPRAG parameter translator.")
    app.add_typer(translator_app, name="translator")

    @translator_app.command("train")
    def train(
        store: str = typer.Option(..., "--store", help="adapter store root written by `dynaprag encode`"),
        out: str = typer.Option(..., "--out", help="folder for translator.safetensors and loss_curve.json"),
        model: str = typer.Option("smollm2-135m", "--model", help="the model the adapters were trained on"),
        dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | auto"),
        set_: list[str] = typer.Option([], "--set", help="TranslatorConfig override key=value, e.g. epochs=3"),
    ) -> None:
        """Train DyPRAG's translator on the store's (document, adapter) pairs; saves the loss curve."""
        from dynaprag.cli import console, fail
        from dynaprag.config import ConfigError

        try:
            summary = run_translator_train(store, out, model, dtype, set_)
        except (ConfigError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        curve = summary["curve"]
        console.print(f"trained on {summary['pairs']} pairs, {summary['steps']} steps in {summary['seconds']:.1f} s; "
                      f"loss {curve[0]['total_loss']:.3f} -> {curve[-1]['total_loss']:.3f}; wrote {out}")
