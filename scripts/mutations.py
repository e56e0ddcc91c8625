"""Plant one faithfulness bug at a time in a copy of the repository and see whether the parity suite fails.

Why: ``tests/comparison`` claims that each named preset does what its reference code does. A
claim like that is only as good as the bugs it catches, so this script keeps a list of
single-line mutations, each a known way to be unfaithful (a threshold back to an old value, a
comparison flipped, a step of the reference procedure left out), applies each to a fresh copy
of the tree at ``--rev`` (``git archive``, in a temporary folder, with ``../shared`` linked
beside it), runs ``tests/comparison`` there, and reports which mutations *survive* (the suite
still passes). Every mutation here must be caught; a survivor is a gap in the suite.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python scripts/mutations.py            # all, HEAD
    .venv/bin/python scripts/mutations.py --only M5,M7 --no-baseline              # a few
    .venv/bin/python scripts/mutations.py --list
    .venv/bin/python scripts/mutations.py --only M4,M5 --no-baseline --hints-only  # only the hinted tests

Each run stops at the first failing test (``-x``): the test files most likely to catch the
mutation run first, then, if they pass, the whole folder; a survivor costs a full suite run. The
unmutated copy runs first (``--no-baseline`` skips it): if it fails, every "caught" would mean
nothing, and the script stops. Exit code: 0 when every mutation was caught, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = "tests/comparison"


@dataclass(frozen=True)
class Mutation:
    id: str
    what: str
    path: str
    old: str  # exactly one occurrence in the file
    new: str
    hints: tuple[str, ...] = ()  # test files (or file::node ids) likely to catch it, run first


FLARE_LOOP = "test_preset_loops.py::test_steps_match_reference[flare-b1]"
"""The whole-loop parity test of ``flare`` against FLARE's own loop (batch 1)."""
SEAKR_STEP = "test_preset_loops.py::test_seakr_first_step_matches_reference[seakr-b1]"
"""``seakr``'s first reasoning step against SeaKR's own reasoner (batch 1)."""

MUTATIONS = (
    Mutation("M1", "DRAGIN: a RIND hit when v < θ instead of v > θ", "src/dynaprag/dynamic/methods/dragin/rind.py",
             "hits = [1 if v > threshold else 0 for v in item.values]",
             "hits = [1 if v < threshold else 0 for v in item.values]", ("test_dragin.py",)),
    Mutation("M2", "SeaKR keeps the retriever's first document instead of the least uncertain one",
             "src/dynaprag/dynamic/methods/seakr/components.py", "return min(range(len(keys)), key=lambda i: (keys[i], i))",
             "return 0", ("test_seakr_parity.py", SEAKR_STEP)),
    Mutation("M3a", "token-rag's sentence solver default avg -> max", "src/dynaprag/dynamic/methods/confidence/components.py",
             'solver: str = field(default="avg", metadata={"help": "sentence solver over 1-p"',
             'solver: str = field(default="max", metadata={"help": "sentence solver over 1-p"',
             ("test_preset_settings.py", "test_trigger_parity.py")),
    Mutation("M3b", "the avg sentence solver is a max", "src/dynaprag/dynamic/methods/confidence/scores.py",
             '_SENTENCE_SOLVERS = {"avg": np.mean,', '_SENTENCE_SOLVERS = {"avg": np.max,',
             ("test_entityrag.py", "test_tokenrag.py")),
    Mutation("M4", "FLARE without its retrieval with the question before the first look-ahead",
             "src/dynaprag/dynamic/methods/confidence/__init__.py",
             '"masked-sentence", knobs={"trigger": {"theta": 0.8, "initial": True}',
             '"masked-sentence", knobs={"trigger": {"theta": 0.8, "initial": False}',
             ("test_preset_settings.py", "test_trigger_parity.py", FLARE_LOOP)),
    Mutation("M5", "FLARE fires on p < θ instead of p <= θ", "src/dynaprag/dynamic/methods/confidence/components.py",
             "inclusive: ClassVar[bool] = True", "inclusive: ClassVar[bool] = False",
             ("test_trigger_parity.py", FLARE_LOOP)),
    Mutation("M6", "DRAGIN's θ back to 1.2 (the value before the audit)", "src/dynaprag/dynamic/methods/dragin/__init__.py",
             '"rind", "real-words", knobs={"trigger": {"theta": 0.8,',
             '"rind", "real-words", knobs={"trigger": {"theta": 1.2,',
             ("test_preset_settings.py",)),
    Mutation("M7", "SeaKR reads its embedding at the last sampled token instead of an appended EOS",
             "src/dynaprag/lm/sampling.py", "feed[b] = eos", "feed[b] = feed[b]", ("test_seakr_parity.py", SEAKR_STEP)),
    Mutation("M8", "DRAGIN cuts at the fired sentence's last word instead of where the sentence begins",
             "src/dynaprag/dynamic/methods/dragin/components.py",
             "keep = sentence_start_token(draft, start, [s.sentence for s in decision.sentences], "
             "decision.sentence_index)",
             "keep = min(start + words.ranges[max(fired.end - 1, fired.start)][0], len(draft.steps))",
             ("test_trigger_parity.py",)),
    Mutation("M9", "DyPRAG's generated delta scaled by α/r", "src/dynaprag/parametric/translator.py",
             'delta_scale: str = field(default="reference"', 'delta_scale: str = field(default="alpha-over-r"',
             ("test_dyprag_parity.py", "test_preset_settings.py")),
    Mutation("M10", "the decoder's entropy in bits instead of nats", "src/dynaprag/lm/signals.py",
             "return -(probs * torch.where(probs > 0, logprobs, torch.zeros_like(logprobs))).sum(-1)",
             "return -(probs * torch.where(probs > 0, logprobs, torch.zeros_like(logprobs))).sum(-1)"
             " / 0.6931471805599453",
             ("test_decoder_parity.py",)),
    Mutation("M11", "token-rag keeps one regenerated sentence instead of the whole look-ahead",
             "src/dynaprag/dynamic/methods/confidence/components.py",
             'AfterRetrieval(recheck=False, accept_tokens=self.look_ahead, passages="accepted")',
             'AfterRetrieval(recheck=False, accept_tokens=0, passages="accepted")', ("test_loop_parity.py", "test_trigger_parity.py")),
    Mutation("M12", "SeaKR's documents cut to the run's k (the regression of REAUDIT S1)",
             "src/dynaprag/dynamic/methods/seakr/components.py", "    accumulates: ClassVar[bool] = True",
             "    accumulates: ClassVar[bool] = False", ("test_loop_parity.py", "test_seakr_parity.py")),
    Mutation("M13", "an empty TokenRAG query skips the retrieval", "src/dynaprag/dynamic/methods/confidence/components.py",
             "    retrieves_empty_query: ClassVar[bool] = True", "    retrieves_empty_query: ClassVar[bool] = False",
             ("test_loop_parity.py", "test_trigger_parity.py")),
    Mutation("M14", "token-rag's θ 0.08 on 2Wiki (the reference's config says 0.1)", "src/dynaprag/dynamic/methods/confidence/__init__.py",
             '"2wikimultihopqa": {"trigger": {"theta": 0.1, "look_ahead": 64}',
             '"2wikimultihopqa": {"trigger": {"theta": 0.08, "look_ahead": 64}', ("test_preset_settings.py",)),
    Mutation("M15", "fl-rag's stride 15 instead of DRAGIN's 32", "src/dynaprag/dynamic/presets.py",
             'knobs={"trigger": {"n": 32}}', 'knobs={"trigger": {"n": 15}}', ("test_preset_settings.py",)),
    Mutation("M16", "FLARE retrieves the run's k on 2Wiki instead of its config's 2", "src/dynaprag/dynamic/methods/confidence/__init__.py",
             '{"2wikimultihopqa": {"selector": {"k": 2}}}', '{"2wikimultihopqa": {"selector": {"k": 0}}}',
             ("test_preset_settings.py",)),
    Mutation("M17", "Self-RAG's utility weight 0.5 (the function default, not the argparse default)",
             "src/dynaprag/dynamic/methods/selfrag/components.py",
             "w_use: float = field(default=1.0,", "w_use: float = field(default=0.5,",
             ("test_selfrag_parity.py",)),
    Mutation("M18", "FLARE masks its query at FlashRAG's beta 0.2 instead of the released 0.4",
             "src/dynaprag/dynamic/methods/confidence/__init__.py", '"formulator": {"beta": 0.4}}', '"formulator": {"beta": 0.2}}',
             (FLARE_LOOP,)),
    Mutation("M19", "FLARE fires at FlashRAG's theta 0.2 instead of the released 0.8", "src/dynaprag/dynamic/methods/confidence/__init__.py",
             '"masked-sentence", knobs={"trigger": {"theta": 0.8, "initial": True}',
             '"masked-sentence", knobs={"trigger": {"theta": 0.2, "initial": True}', (FLARE_LOOP,)),
    Mutation("M20", "FLARE judges the sentence regenerated with the passages again (the reference appends it unchecked)",
             "src/dynaprag/dynamic/triggers.py",
             "after_retrieval: ClassVar[AfterRetrieval] = AfterRetrieval(recheck=False)",
             "after_retrieval: ClassVar[AfterRetrieval] = AfterRetrieval(recheck=True)", (FLARE_LOOP,)),
)


@dataclass
class Outcome:
    id: str
    what: str
    result: str  # caught | SURVIVED | error
    first_failure: str
    seconds: float


def extract(rev: str, into: Path) -> Path:
    """The tree at ``rev`` under ``into/<repo name>``, with ``../shared`` linked beside it as in a checkout."""
    repo = into / ROOT.name
    repo.mkdir(parents=True)
    archive = into / "tree.tar"
    with open(archive, "wb") as fh:
        subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(repo, filter="data")
    archive.unlink()
    shared = ROOT.parent / "shared"
    if shared.exists():
        (into / "shared").symlink_to(shared)
    return repo


def environment(repo: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("DYNAPRAG_CACHE", str(ROOT / ".cache" / "dynaprag"))
    return env


def check_import(repo: Path, python: str) -> None:
    """The copy's package must be the one imported (not the editable install of the original tree)."""
    out = subprocess.run([python, "-c", "import dynaprag; print(dynaprag.__file__)"], cwd=repo, env=environment(repo),
                         capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(repo.resolve()):
        raise SystemExit(f"the copy imports dynaprag from {out}, not from {repo}: cannot test mutations")


def run_suite(repo: Path, python: str, hints: tuple[str, ...], extra: list[str],
              hints_only: bool = False) -> tuple[int, str, float]:
    """pytest on the hinted files first (pytest orders one run's files by the tree, not by the
    arguments), then, if they pass and not ``hints_only``, on the whole suite; ``(exit code, first
    failure, seconds)``."""
    first = [f"{SUITE}/{h}" for h in hints if (repo / SUITE / h.split("::")[0]).is_file()]
    t0 = time.perf_counter()
    for targets in ([first] if first else []) + ([] if hints_only else [[SUITE]]):
        cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *extra, *targets]
        proc = subprocess.run(cmd, cwd=repo, env=environment(repo), capture_output=True, text=True)
        if proc.returncode != 0:
            break
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.MULTILINE)
    tail = proc.stdout.strip().splitlines()[-1:] or proc.stderr.strip().splitlines()[-1:]
    return proc.returncode, failed[0] if failed else (tail[0] if tail else ""), time.perf_counter() - t0


def mutate(repo: Path, m: Mutation) -> str:
    path = repo / m.path
    text = path.read_text(encoding="utf-8")
    if text.count(m.old) != 1:
        raise ValueError(f"{m.id}: the line to mutate occurs {text.count(m.old)} times in {m.path} (expected once)")
    path.write_text(text.replace(m.old, m.new), encoding="utf-8")
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD", help="the commit to copy (default HEAD; uncommitted edits are not tested)")
    ap.add_argument("--only", default="", help="comma-separated mutation ids (default: all)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated copy")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--out", type=Path, help="also write the outcomes as JSON here")
    ap.add_argument("--pytest-args", default="", help="extra pytest arguments, e.g. '-m \"not slow\"'")
    ap.add_argument("--hints-only", action="store_true", help=(
        "run only each mutation's hinted tests (quick: a mutation they miss is reported 'missed by hints', "
        "not run against the whole suite)"))
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.id in args.only.split(",")]
    if args.list:
        for m in chosen:
            print(f"{m.id:4} {m.path}: {m.what}")
        return 0
    python, extra = sys.executable, args.pytest_args.split()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="dynaprag-mutations-") as tmp:
        repo = extract(args.rev, Path(tmp))
        check_import(repo, python)
        if not args.no_baseline:
            code, first, secs = run_suite(repo, python, (), extra)
            print(f"baseline (unmutated {args.rev}): exit {code} in {secs:.0f} s {first}", flush=True)
            if code != 0:
                print("the unmutated copy fails the suite: fix that first", file=sys.stderr)
                return 2
        for m in chosen:
            try:
                original = mutate(repo, m)
            except ValueError as exc:
                outcomes.append(Outcome(m.id, m.what, "error", str(exc), 0.0))
                print(f"{m.id}: error: {exc}", flush=True)
                continue
            try:
                code, first, secs = run_suite(repo, python, m.hints, extra, args.hints_only)
            finally:
                (repo / m.path).write_text(original, encoding="utf-8")
            survived = "missed by hints" if args.hints_only else "SURVIVED"
            result = "caught" if code == 1 else survived if code == 0 else "error"
            outcomes.append(Outcome(m.id, m.what, result, first, secs))
            print(f"{m.id}: {result} in {secs:.0f} s ({first})", flush=True)
    print("\n| id | mutation | result | first failing test |\n|---|---|---|---|")
    for o in outcomes:
        print(f"| {o.id} | {o.what} | {o.result} | {o.first_failure} |")
    survivors = [o.id for o in outcomes if o.result != "caught"]
    print(f"\n{len(outcomes) - len(survivors)} of {len(outcomes)} caught" +
          (f"; not caught: {', '.join(survivors)}" if survivors else ""))
    if args.out:
        args.out.write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n", encoding="utf-8")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
