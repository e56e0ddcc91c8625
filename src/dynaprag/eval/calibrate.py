"""Fit a trigger's threshold θ for one model on a held-out split, and write it as an eval config.

Published thresholds (DRAGIN's θ = 1.2 on 2Wiki, SeaKR's θ = -6) were set for 7B-13B models;
a small model's scores live on another scale, so the paper's θ may never (or always) fire and
the method degenerates into ``wo-rag`` (or ``fs-rag``). Calibration rescales θ for the model
instead of guessing.

**What is measured.** Questions ``start .. start+n-1`` of the dataset are answered with the
trigger's threshold at +∞, so it never fires and every answer is the model's no-retrieval draft;
each question's *largest* trigger score (the trace's ``tokens[i].score``) is kept. A trigger
that retrieves when a score exceeds θ fires at least once on a question exactly when that
maximum exceeds θ (the draft up to the first retrieval is the same greedy decode).

**The target.** θ is chosen so that the trigger fires on a share ``target_rate`` of the
questions (default 0.5: θ is the median maximum); precisely,
θ is the nearest-rank ``(1 - target_rate)``-quantile of the maxima, so it fires on
``floor(target_rate · n)`` questions, fewer when maxima tie at θ (:attr:`Calibration.fire_rate`
reports the share reached). Rate 0 gives the largest maximum (never fires), rate 1 a value just
below the smallest (fires on every question).

**The split.** The default ``start`` is 100 because the default evaluation slice is the first
100 questions; the written config sets ``limit: start`` so ``dynaprag eval --config FILE``
evaluates only questions the threshold was not fitted on.

Only triggers that declare ``calibratable = True`` (``rind``, ``seakr``) fit this rule; other
triggers are refused with a :class:`~dynaprag.config.ConfigError` naming the trigger.

>>> choose_theta([0.1, 0.4, 0.2, 0.3], target_rate=0.5)   # fires on 0.3 and 0.4
0.2
>>> fire_rate([0.1, 0.4, 0.2, 0.3], 0.2)
0.5
"""
from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from dynaprag.config import ConfigError, parse_overrides, to_dict
from dynaprag.files import atomic_write_text

__all__ = ["DEFAULT_N", "DEFAULT_START", "DEFAULT_TARGET_RATE", "Calibration", "CalibrationError",
           "CalibratedThreshold", "calibrate", "choose_theta", "config_yaml", "fire_rate", "percent", "quantile",
           "question_maxima", "read_threshold", "write_config"]

DEFAULT_START = 100  # the default evaluation slice is questions 0..99
DEFAULT_N = 50
DEFAULT_TARGET_RATE = 0.5  # θ = the median of the per-question maxima


class CalibrationError(ValueError):
    """The per-question scores cannot give the requested target (empty, NaN, too few scored)."""


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank q-quantile: the smallest value with at least a share q of values at or below it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def percent(share: float) -> str:
    """A share as people read it: ``1.0`` -> ``"100 %"``, ``0.3333`` -> ``"33 %"``."""
    return f"{100 * share:.0f} %"


def fire_rate(maxima: Sequence[float], theta: float) -> float:
    """Share of questions on which a trigger that fires when a score exceeds ``theta`` fires."""
    return sum(m > theta for m in maxima) / len(maxima) if maxima else 0.0


def choose_theta(maxima: Sequence[float], target_rate: float = DEFAULT_TARGET_RATE) -> float:
    """θ at which the trigger fires (score > θ) on ``floor(target_rate · n)`` of ``n`` questions.

    ``maxima`` holds each question's largest trigger score (``-inf`` for a question the trigger
    scored nothing on: it can never fire there). θ is one of the maxima — the nearest-rank
    ``(1 - target_rate)``-quantile, so the question holding it does not fire — or, when every
    question that can fire must fire, the float just below the smallest of those. Ties at θ
    make the reached rate lower than the target (see :func:`fire_rate`).

    >>> choose_theta([-7.0, -6.0, -5.0], target_rate=1 / 3)   # SeaKR-scale scores work alike
    -6.0
    >>> choose_theta([0.1, 0.4], target_rate=0.0), choose_theta([0.1, 0.4], target_rate=1.0) < 0.1
    (0.4, True)
    """
    values = [float(m) for m in maxima]
    if not values:
        raise CalibrationError("no per-question maxima to calibrate on: the split holds no questions")
    if not isinstance(target_rate, (int, float)) or not 0.0 <= target_rate <= 1.0:
        raise CalibrationError(f"target rate must be a share between 0 and 1, got {target_rate!r}")
    nan = [i for i, m in enumerate(values) if math.isnan(m)]
    if nan:
        raise CalibrationError(f"the trigger scored NaN on {len(nan)} of {len(values)} questions (positions "
                               f"{', '.join(map(str, nan[:5]))}); a NaN score cannot be compared with θ")
    n = len(values)
    scored = sum(m > -math.inf for m in values)
    fire = math.floor(target_rate * n + 1e-9)
    if scored == 0:
        raise CalibrationError(f"the trigger produced no score on any of the {n} questions; "
                               "give the answers more tokens (max_new_tokens) or check the method")
    if fire > scored:
        raise CalibrationError(f"only {scored} of {n} questions produced a trigger score, so at most "
                               f"{scored / n:.3g} of them can fire; lower the target rate or give the answers "
                               "more tokens (max_new_tokens)")
    ordered = sorted(values)
    if fire == 0:
        return ordered[-1]
    below = ordered[n - fire - 1] if fire < n else -math.inf
    return below if math.isfinite(below) else math.nextafter(ordered[n - fire], -math.inf)


def question_maxima(pipeline: Any, questions: Sequence[str], *, method: str | None = None,
                    progress: bool = False, on_score: Callable[[int, float], None] | None = None,
                    label: str = "calibrate") -> list[float]:
    """Each question's largest trigger score while answering with θ = +∞ (no retrieval).

    ``pipeline`` is a :class:`dynaprag.pipeline.Pipeline` (its configured method, or preset
    ``method``); a question the trigger scored nothing on gives ``-inf``, one with a NaN score
    gives NaN. ``on_score(i, maximum)`` is called after each question.
    """
    from tqdm.auto import tqdm

    from dynaprag.lm.generator import PromptTooLong  # here, so importing this module does not load torch

    maxima: list[float] = []
    bar = tqdm(total=len(questions), disable=not progress, unit="q", dynamic_ncols=True, desc=label)
    try:
        for i, question in enumerate(questions):
            try:
                answer = pipeline.answer(question, method=method, options={"trigger.theta": math.inf})
            except PromptTooLong as exc:
                raise CalibrationError(f"question {i} of the split ({question[:60]!r}): {exc}") from None
            if answer.trace.retrievals:
                raise CalibrationError(f"the trigger retrieved at θ = +inf ({answer.trace.retrievals[0].reason}); "
                                       "it does not fire on a score above θ and cannot be calibrated this way")
            scores = [t.score for t in answer.trace.tokens if t.score is not None]
            top = math.nan if any(math.isnan(s) for s in scores) else max(scores, default=-math.inf)
            maxima.append(top)
            if on_score is not None:
                on_score(i, top)
            bar.set_postfix(max_score=f"{top:.4g}")
            bar.update(1)
    finally:
        bar.close()
    return maxima


@dataclass(frozen=True)
class Calibration:
    """A fitted threshold with everything needed to trust and reuse it.

    ``config`` holds the keys of the written eval config (``method``, ``model``, ``trigger``...);
    the rest is provenance, written as comments (:func:`config_yaml`).
    """

    method: str
    trigger: str  # registered trigger name
    dataset: str
    model: str
    question_file: str
    start: int  # 0-based index of the first calibration question
    question_ids: tuple[str, ...]
    maxima: tuple[float, ...]  # per question, in split order; -inf: the trigger scored nothing
    target_rate: float
    theta: float
    preset_theta: float  # the θ the method had before calibration
    max_new_tokens: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.maxima)

    @property
    def split(self) -> str:
        """The split rule in words, e.g. ``questions 100..149 (0-based) of FILE``."""
        return f"questions {self.start}..{self.start + self.n - 1} (0-based) of {self.question_file}"

    @property
    def fire_rate(self) -> float:
        """Share of the split's questions on which the trigger fires at the calibrated θ."""
        return fire_rate(self.maxima, self.theta)

    @property
    def preset_fire_rate(self) -> float:
        """Share of the split's questions on which the trigger fires at the preset's θ."""
        return fire_rate(self.maxima, self.preset_theta)

    def summary(self) -> dict[str, float | int]:
        """Nearest-rank quartiles of the maxima of questions the trigger scored, and the unscored count."""
        scored = [m for m in self.maxima if m > -math.inf]
        stats = {"unscored": self.n - len(scored)}
        if scored:
            stats.update({"min": min(scored), "q25": quantile(scored, 0.25), "median": quantile(scored, 0.5),
                          "q75": quantile(scored, 0.75), "max": max(scored)})
        return stats


def calibrate(method: str, dataset: str, model: str | None = None, *, data_dir: str | None = None,
              questions: str | None = None, start: int = DEFAULT_START, n: int = DEFAULT_N,
              target_rate: float = DEFAULT_TARGET_RATE, max_new_tokens: int | None = None,
              dtype: str | None = None, overrides: Sequence[str] = (), progress: bool = False,
              lm: Any = None, retriever: Any = None) -> Calibration:
    """Fit ``method``'s trigger threshold for ``model`` on questions ``start .. start+n-1`` of ``dataset``.

    The pipeline is configured exactly as ``dynaprag eval`` would configure it for the same
    dataset, method and ``key=value`` ``overrides`` (exemplars, corpus, prompt), so θ is fitted
    on the prompts the evaluation will use. Names, knobs, the trigger's calibratability and the
    split are checked before any model loads. ``lm``/``retriever`` reuse loaded components.

    >>> cal = calibrate("dragin", "demo", start=0, n=3, max_new_tokens=16)   # doctest: +SKIP
    >>> write_config(cal, "dragin-demo.yaml")                                 # doctest: +SKIP
    """
    from dynaprag.eval.experiment import RunConfig, library_progress, load_run_examples, question_file, resolve
    from dynaprag.pipeline import Pipeline, resolve_method_of

    if start < 0:
        raise ConfigError(f"start: must be 0 or more, got {start}")
    if n < 1:
        raise ConfigError(f"n: must be at least 1, got {n}")
    if not 0.0 <= target_rate <= 1.0:
        raise ConfigError(f"target rate: must be a share between 0 and 1, got {target_rate}")
    user = parse_overrides(list(overrides))
    run_keys = {f for f in RunConfig.__dataclass_fields__}
    misplaced = [k for k in user if k.split(".", 1)[0] in run_keys]
    if misplaced:
        raise ConfigError(f"{misplaced[0]!r} is a run key: calibrate picks its questions with --dataset, "
                          "--data-dir, --questions, --start and --n")
    explicit = {k: v for k, v in (("model", model), ("max_new_tokens", max_new_tokens), ("dtype", dtype))
                if v is not None}
    pipe_over = [f"{k}={v}" for k, v in explicit.items()] + list(overrides)
    run_cfg, pipe_cfg = resolve(dataset, data_dir=data_dir, questions=questions, method=method,
                                limit=start + n, overrides=pipe_over)
    resolved = resolve_method_of(pipe_cfg)
    trigger_name = resolved.names["trigger"]
    if not getattr(type(resolved.trigger), "calibratable", False):
        raise ConfigError(f"trigger {trigger_name!r} of method {method!r} cannot be calibrated: only triggers that "
                          "retrieve when a score exceeds theta (calibratable = True: rind, seakr) can")
    examples = load_run_examples(run_cfg)
    split = examples[start:]
    if len(split) < n:
        raise ConfigError(f"{question_file(run_cfg)} holds {len(examples)} questions, the split "
                          f"{start}..{start + n - 1} needs {start + n}: lower --start or --n")
    with library_progress(progress):  # --no-progress: no weight-loading or index-building bars either
        if retriever is None:
            from dynaprag.retrieval import build_retriever

            retriever = build_retriever(pipe_cfg.retrieval, progress=progress)
        pipeline = Pipeline.from_config(pipe_cfg, lm=lm, retriever=retriever)
    maxima = question_maxima(pipeline, [ex.question for ex in split], progress=progress,
                             label=f"calibrate {method} on {dataset}")
    try:
        theta = choose_theta(maxima, target_rate)
    except CalibrationError as exc:
        raise CalibrationError(f"{exc} (split {start}..{start + n - 1} of {question_file(run_cfg)})") from None
    trigger = {**dict(pipe_cfg.trigger), "theta": theta}
    config: dict[str, Any] = {"method": pipe_cfg.method, "model": pipe_cfg.model, "dtype": pipe_cfg.dtype,
                              "max_new_tokens": pipe_cfg.max_new_tokens, "dataset": run_cfg.dataset}
    for key in ("data_dir", "questions"):
        if getattr(run_cfg, key):
            config[key] = getattr(run_cfg, key)
    if start >= 1:
        config["limit"] = start
    resolved_pipe = to_dict(pipe_cfg)
    for key in user:
        if key.split(".", 1)[0] not in ("trigger", "method", "model", "dtype", "max_new_tokens"):
            _nest(config, key, _lookup(resolved_pipe, key))
    config["trigger"] = trigger
    return Calibration(method=pipe_cfg.method, trigger=trigger_name, dataset=run_cfg.dataset,
                       model=pipe_cfg.model, question_file=str(question_file(run_cfg)), start=start,
                       question_ids=tuple(ex.id for ex in split), maxima=tuple(maxima), target_rate=target_rate,
                       theta=theta, preset_theta=float(pipe_cfg.trigger["theta"]),
                       max_new_tokens=pipe_cfg.max_new_tokens, config=config)


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def _nest(config: dict[str, Any], dotted: str, value: Any) -> None:
    *heads, last = dotted.split(".")
    for head in heads:
        config = config.setdefault(head, {})
    config[last] = value


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_yaml(cal: Calibration, *, now: datetime | None = None) -> str:
    """The eval config for ``cal``: its keys, with the split, target and score summary as comments."""
    import yaml

    from dynaprag import __version__

    stats = cal.summary()
    spread = " · ".join(f"{k} {stats[k]:.4g}" for k in ("min", "q25", "median", "q75", "max") if k in stats)
    when = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    eval_slice = (f"evaluate on questions 0..{cal.start - 1} (limit: {cal.start} below)" if cal.start else
                  "WARNING: start 0 leaves no question before the split, so any evaluation overlaps it")
    lines = [
        f"# dynaprag calibrate: trigger {cal.trigger!r} of method {cal.method!r}, model {cal.model!r}, "
        f"dataset {cal.dataset!r}",
        f"# theta = {cal.theta:.6g} (preset {cal.preset_theta:g}): the trigger fires on its no-retrieval draft "
        f"for {percent(cal.fire_rate)} of the split's questions",
        f"#   target rate {cal.target_rate:g}: theta = nearest-rank {1 - cal.target_rate:g}-quantile of each "
        "question's largest trigger score (answers decoded with theta = +inf)",
        f"#   at the preset theta it would fire for {percent(cal.preset_fire_rate)} of them",
        f"# split: {cal.split}, {cal.n} questions; {eval_slice}",
        f"# per-question maximum score: {spread or 'none'}; {stats['unscored']} of {cal.n} questions scored nothing",
        f"# max_new_tokens {cal.max_new_tokens}, greedy answers; {when}, dynaprag {__version__}, git {_git_commit()}",
        "# use: dynaprag eval --config THIS_FILE --out runs/NAME",
    ]
    return "\n".join(lines) + "\n" + yaml.safe_dump(cal.config, sort_keys=False, allow_unicode=True)


def write_config(cal: Calibration, path: str | Path) -> Path:
    """Write :func:`config_yaml` to ``path`` atomically; ``dynaprag eval --config path`` reads it."""
    path = Path(path)
    atomic_write_text(path, config_yaml(cal))
    return path


@dataclass(frozen=True)
class CalibratedThreshold:
    """The θ a written calibration config holds, with what it is valid for.

    ``held_out_from`` is the config's ``limit``: the calibration split starts there, so only
    questions ``0 .. held_out_from - 1`` may be evaluated with this θ.
    """

    path: str
    method: str
    dataset: str
    model: str
    theta: float
    held_out_from: int | None


def read_threshold(path: str | Path) -> CalibratedThreshold:
    """Read a config written by :func:`write_config`; a missing file or field is a :class:`ConfigError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: calibration file not found (write one with dynaprag calibrate)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a calibration config (a mapping), got {type(data).__name__}")
    for key in ("method", "dataset", "model"):
        if not isinstance(data.get(key), str):
            raise ConfigError(f"{path}: field {key!r} is missing (not a dynaprag calibrate config?)")
    theta = (data.get("trigger") or {}).get("theta") if isinstance(data.get("trigger"), dict) else None
    if not isinstance(theta, (int, float)) or isinstance(theta, bool):
        raise ConfigError(f"{path}: field 'trigger.theta' is missing or not a number")
    limit = data.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"{path}: field 'limit' must be a positive integer, got {limit!r}")
    return CalibratedThreshold(str(path), data["method"], data["dataset"], data["model"], float(theta), limit)
