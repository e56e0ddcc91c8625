"""``dynaprag encode`` (PRAG's offline phase) and ``dynaprag translator train`` (DyPRAG's)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def select_passages(corpus: str, ids: list[str], limit: Optional[int]):
    """Passages of ``corpus`` restricted to ``ids`` (in corpus order) and/or the first ``limit`` (at least 1)."""
    from dynaprag.config import ConfigError
    from dynaprag.corpora import read_passages

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit: must be at least 1, got {limit}; leave it out to encode every passage")
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
               dtype: str, use_ray: bool, workers: int, overrides: list[str], show_progress: bool = True,
               ray_address: Optional[str] = None, ray_timeout: int = 120):
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

    try:  # closed on an error too, so the error's line is not glued to the bar
        if use_ray:
            from dynaprag.parametric.distributed import RayConfig, encode_with_ray

            report = encode_with_ray(model, dtype, lm.fingerprint, passages, store, config,
                                     RayConfig(address=ray_address, workers=workers, startup_timeout_s=ray_timeout),
                                     progress)
        else:
            report = encode_corpus(lm, passages, store, config, progress)
    finally:
        bar.close()
    return store, report


def store_encode_config(store_dir: str, fingerprint: str):
    """(store root, the :class:`EncodeConfig` its adapters were encoded with) for ``--store``.

    ``store_dir`` is the root ``dynaprag encode --store`` wrote (it must hold exactly one
    encoding for this model) or one encoding's folder ``ROOT/<fingerprint>/<config hash>``.
    The settings come from that folder's manifest, so the translator's teacher adapters,
    samples and scaling are the ones the store was trained with, not today's defaults.
    """
    from dynaprag.config import ConfigError, from_dict
    from dynaprag.parametric.adapters import MANIFEST, REPAIR_HINT, config_hash
    from dynaprag.parametric.encode import EncodeConfig

    path = Path(store_dir)
    if (path / MANIFEST).is_file():
        folders, root = [path], path.parent.parent
    else:
        folders, root = sorted(p.parent for p in (path / fingerprint).glob(f"*/{MANIFEST}")), path
    if not folders:
        raise FileNotFoundError(f"{path}: no adapter store for model {fingerprint}; run `dynaprag encode "
                                f"--store {path} --model ...` with the same model first")
    if len(folders) > 1:
        raise ValueError(f"{path}: {len(folders)} encodings for model {fingerprint} "
                         f"({', '.join(f.name for f in folders)}); pass one of them as --store {folders[0]}")
    manifest = folders[0] / MANIFEST
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{manifest}: not readable ({type(exc).__name__}); "
                         + REPAIR_HINT.format(root=root)) from None
    try:
        recorded = dict(data["config"])
        recorded.pop("format", None)
        config = from_dict(EncodeConfig, recorded)
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        raise ValueError(f"{manifest}: its 'config' is not an EncodeConfig ({exc}); re-encode with "
                         f"`dynaprag encode`") from None
    if config_hash(config.store_config()) != folders[0].name:
        raise ValueError(f"{manifest}: its 'config' does not hash to its folder {folders[0].name} (written by "
                         f"another dynaprag version?); re-encode with `dynaprag encode`")
    return root, config


def run_translator_train(store_dir: str, out: str, model: str, dtype: str, overrides: list[str],
                         show_progress: bool = True) -> dict:
    """The body of ``dynaprag translator train``: trains on every adapter in the store, with the
    settings the store was encoded with (:func:`store_encode_config`). Resumable: the training
    state is kept in ``OUT/training-state.safetensors`` until the translator is saved."""
    from tqdm import tqdm

    from dynaprag.config import apply_overrides
    from dynaprag.files import atomic_write_json
    from dynaprag.lm import load_model
    from dynaprag.parametric.stores import open_store
    from dynaprag.parametric.translator import (TranslatorConfig, pairs_from_store, train_translator,
                                                translator_metadata)

    config = apply_overrides(TranslatorConfig(), overrides)
    lm = load_model(model, dtype=dtype)
    root, encode_config = store_encode_config(store_dir, lm.fingerprint)
    store = open_store(root, lm, encode_config)
    pairs = pairs_from_store(lm, store, encode_config)
    bar = tqdm(total=len(pairs) * config.epochs, desc="translator", unit="step", disable=not show_progress)

    def progress(row):
        bar.update(row["step"] - bar.n)  # a resumed run starts past step 1
        bar.set_postfix_str(f"loss {row['total_loss']:.3f}")

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = out_dir / "training-state.safetensors"
    net, curve = train_translator(lm, pairs, encode_config.scaling, encode_config.targets, encode_config.rank,
                                  config, progress=progress, state_path=state)
    bar.close()
    net.save(out_dir / "translator.safetensors", translator_metadata(lm, config, encode_config.scaling,
                                                                      encode_config.targets))
    summary = {"pairs": len(pairs), "steps": len(curve), "seconds": curve[-1]["seconds"] if curve else 0.0,
               "store": str(store.dir), "curve": curve}
    atomic_write_json(out_dir / "loss_curve.json", summary)
    state.unlink(missing_ok=True)
    return summary


def run_repair(store_root: Optional[str]) -> list:
    """The body of ``dynaprag encode --repair``: rebuild the manifest of every encoding folder under
    ``store_root`` (or of the one folder given) from its intact adapters; returns the reports."""
    from dynaprag.parametric.store_repair import encoding_folders, repair_store
    from dynaprag.parametric.stores import default_store_root

    root = Path(store_root) if store_root else default_store_root()
    folders = encoding_folders(root)
    if not folders:
        raise FileNotFoundError(f"{root}: no adapter store here (no <fingerprint>/<config hash>/adapters/ "
                                "folders); pass the --store that `dynaprag encode` wrote")
    return [repair_store(folder) for folder in folders]


def register(app: typer.Typer) -> None:
    """Add ``encode`` and ``translator train`` to the ``dynaprag`` command."""

    @app.command("encode")
    def encode(
        corpus: Optional[str] = typer.Option(None, "--corpus", help="passages .jsonl or DPR .tsv (required "
                                                                    "unless --repair)"),
        ids: list[str] = typer.Option([], "--ids", help="only these passage ids (repeatable)"),
        limit: Optional[int] = typer.Option(None, "--limit", help="at most N passages"),
        store: Optional[str] = typer.Option(None, "--store", help="adapter store root (default $DYNAPRAG_CACHE/adapters)"),
        model: str = typer.Option("smollm2-135m", "--model", help="model alias, HF id or folder"),
        dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | auto"),
        ray: bool = typer.Option(False, "--ray", help="distribute over a Ray cluster (a new local one unless "
                                                      "--ray-address)"),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS",
                                                  help="with --ray: a running cluster (auto, HOST:PORT, ray://HOST:10001)"),
        ray_timeout: int = typer.Option(120, "--ray-timeout", help="with --ray: seconds a local cluster may take "
                                                                    "to start (retried once)"),
        workers: int = typer.Option(2, "--workers", help="Ray actors"),
        set_: list[str] = typer.Option([], "--set", help="EncodeConfig override key=value, e.g. rank=4"),
        repair: bool = typer.Option(False, "--repair", help="rebuild the --store's manifest from its intact "
                                                            "adapters (no model, no encoding), then exit"),
    ) -> None:
        """PRAG offline phase: augment each passage and train its LoRA (resumable: finished docs skip)."""
        from dynaprag.cli import MAX_WORKERS, at_most, console, fail
        from dynaprag.cluster import RayStartError
        from dynaprag.config import ConfigError

        if repair:
            try:
                reports = run_repair(store)
            except (ValueError, OSError) as exc:
                fail(str(exc))
            for found in reports:
                console.print(found.summary(), markup=False)
            return
        if corpus is None:
            fail("--corpus is required: the passages to encode (or pass --repair to rebuild a store's manifest)")
        try:
            at_most("--workers", workers, MAX_WORKERS)
            st, report = run_encode(corpus, ids, limit, store, model, dtype, ray, workers, set_,
                                    ray_address=ray_address, ray_timeout=ray_timeout)
        except (ConfigError, ValueError, FileNotFoundError, RayStartError) as exc:
            fail(str(exc))
        console.print(f"encoded {report.encoded}, skipped {report.skipped} (already in store), "
                      f"repaired {report.repaired} (damaged or missing adapters redone), "
                      f"{report.unaugmentable} unaugmentable (QA list never parsed: no adapter, as PRAG), "
                      f"{report.incomplete_augmentations} incomplete augmentations "
                      f"({report.augmentation_failures} failed attempts); store {st.dir} holds "
                      f"{sum(not e.get('skipped') for e in st.entries().values())} adapters")

    translator_app = typer.Typer(no_args_is_help=True, help="DyPRAG parameter translator.")
    app.add_typer(translator_app, name="translator")

    @translator_app.command("train")
    def train(
        store: str = typer.Option(..., "--store", help="adapter store root written by `dynaprag encode` "
                                                       "(or one encoding's folder ROOT/<fingerprint>/<hash>)"),
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
