"""Issue 27 item 2: dynaprag deletes only what it recognisably created.

``dynaprag eval --out EXISTING_FOLDER`` once deleted ``site-staging-2019/``, ``photos.partial-3000/``,
``thesis.tmp-4242`` and ``.bashrc.tmp12``: its sweep removed anything named like a temporary file
whose "PID" was not running. Now temporary names are ``.NAME.dynaprag-<kind>-<pid>`` (folders with
a ``.dynaprag-temp`` marker inside), sweeps run only in dynaprag's own folders or look only at one
path's own names, and a non-empty ``--out`` that is not a run folder is refused with exit 2
unless ``--out-nonempty-ok``. The eval tests run the real default model; the kill -9 test starts
``dynaprag eval`` as a subprocess and kills it once a record is on disk.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynaprag.cli import app
from dynaprag.eval.runner import CONFIG, RECORDS, RUN_MARKER, SUMMARY, RunError, claim_run_folder, read_records
from dynaprag.files import (TEMP_MARKER, sweep_legacy_of, sweep_stale, sweep_stale_of, temp_dir, tmp_name)

ROOT = Path(__file__).resolve().parents[1]
FAST = ["max_new_tokens=2", "prompt.shots=0", "dtype=float32"]
QUESTIONS = [{"id": f"q{i}", "question": f"What is {i} plus {i}?", "answers": [str(2 * i)]} for i in range(4)]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def user_files(folder: Path) -> dict[Path, bytes | None]:
    """The issue's look-alikes plus names of exactly the old pattern with a dead PID; folders map to None."""
    dead = dead_pid()
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[Path, bytes | None] = {}
    for name in ("site-staging-2019", "photos.partial-3000", f"album.building-{dead}", f".cache.staging-{dead}"):
        (folder / name).mkdir()
        (folder / name / "keep.txt").write_text("mine")
        made[folder / name] = None
    for name in ("thesis.tmp-4242", ".bashrc.tmp12", f"notes.tmp-{dead}", f".draft.txt.tmp{dead}",
                 f"data.csv.partial-{dead}", f"results.json.tmp-{dead}"):
        (folder / name).write_bytes(name.encode())
        made[folder / name] = name.encode()
    return made


def flat(output: str) -> str:
    """CLI output with the terminal's line wrapping undone."""
    return " ".join(output.split())


def assert_intact(made: dict[Path, bytes | None]) -> None:
    for path, content in made.items():
        assert path.exists(), f"{path.name} was deleted"
        if content is None:
            assert (path / "keep.txt").read_text() == "mine"
        else:
            assert path.read_bytes() == content


# --- the sweeps -----------------------------------------------------------------------------------

def test_sweeps_remove_only_dynaprag_temporaries_of_dead_writers(tmp_path):
    made = user_files(tmp_path)
    dead = dead_pid()
    ours_file = tmp_path / f".summary.json.dynaprag-tmp-{dead}"
    ours_file.write_text("{half")
    ours_dir = tmp_path / f".idx.dynaprag-building-{dead}"
    ours_dir.mkdir()
    (ours_dir / TEMP_MARKER).write_text("")
    unmarked = tmp_path / f".photos.dynaprag-staging-{dead}"  # our name, but no marker: not ours to delete
    unmarked.mkdir()
    live = tmp_name(tmp_path / "summary.json")  # this process is alive
    live.write_text("{writing")
    assert sorted(sweep_stale(tmp_path)) == sorted([ours_file, ours_dir])
    assert unmarked.exists() and live.exists()
    assert sweep_stale_of(tmp_path / "thesis") == [] and sweep_stale_of(tmp_path / "photos") == []
    # an earlier version's unmarked names go only for a path named by a caller that owns the folder
    (notes,) = tmp_path.glob("notes.tmp-*")
    assert sweep_legacy_of(tmp_path / "notes") == [notes]
    made.pop(notes)
    assert_intact(made)


def test_temp_dir_is_marked_and_removing_it_needs_the_marker(tmp_path):
    from dynaprag.files import publish_temp_dir, remove_temp_dir

    tmp = temp_dir(tmp_path / "model")
    assert tmp.name == f".model.dynaprag-staging-{os.getpid()}" and (tmp / TEMP_MARKER).is_file()
    (tmp / "weights").write_text("w")
    publish_temp_dir(tmp, tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["weights"]
    remove_temp_dir(tmp_path / "model")  # a published (unmarked) folder is never removed as a temp
    assert (tmp_path / "model" / "weights").exists()


# --- eval --out ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def question_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("questions") / "four.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    return path


def eval_args(questions: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--dataset", "demo", "--questions", str(questions), "--method", "wo-rag", "--out", str(out),
            "--no-progress", *extra, *FAST]


def test_claim_refuses_a_user_folder_and_accepts_runs_and_empty_folders(tmp_path):
    made = user_files(tmp_path / "mine")
    with pytest.raises(RunError, match=r"not empty and not a dynaprag run folder \(10 entries.*--out-nonempty-ok"):
        claim_run_folder(tmp_path / "mine")
    assert not (tmp_path / "mine" / RUN_MARKER).exists()
    claim_run_folder(tmp_path / "fresh" / "run")
    assert (tmp_path / "fresh" / "run" / RUN_MARKER).is_file()
    earlier = tmp_path / "earlier"  # a run folder of a dynaprag without the marker
    earlier.mkdir()
    (earlier / CONFIG).write_text(json.dumps({"dataset": "demo", "pipeline": {"method": "wo-rag"}}))
    claim_run_folder(earlier)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunError, match="is a file"):
        claim_run_folder(tmp_path / "afile")
    assert_intact(made)


@pytest.mark.slow
def test_eval_into_a_user_folder_is_refused_then_adopted_without_deleting_anything(question_file, tmp_path):
    out = tmp_path / "home"
    made = user_files(out)
    refused = CliRunner().invoke(app, eval_args(question_file, out, "--limit", "1"))
    assert refused.exit_code == 2
    assert "not empty" in flat(refused.output) and "--out-nonempty-ok" in flat(refused.output)
    assert flat(refused.output).startswith("error:") and "Traceback" not in refused.output
    assert not (out / RUN_MARKER).exists() and not (out / CONFIG).exists()

    dead = dead_pid()
    ours = out / f".summary.json.dynaprag-tmp-{dead}"  # what a killed dynaprag would leave
    ours.write_text("{half a summ")
    done = CliRunner().invoke(app, eval_args(question_file, out, "--limit", "2", "--out-nonempty-ok"))
    assert done.exit_code == 0, done.output
    assert_intact(made)
    assert not ours.exists()
    assert [r["id"] for r in read_records(out / RECORDS)] == ["q0", "q1"]
    again = CliRunner().invoke(app, eval_args(question_file, out, "--limit", "3"))  # a run folder now
    assert again.exit_code == 0, again.output
    assert [r["id"] for r in read_records(out / RECORDS)] == ["q0", "q1", "q2"]
    assert_intact(made)


@pytest.mark.slow
def test_kill_9_in_an_adopted_folder_resumes_and_keeps_the_users_files(question_file, tmp_path):
    out = tmp_path / "projects"
    made = user_files(out)
    command = [str(Path(sys.executable).parent / "dynaprag"), *eval_args(question_file, out, "--out-nonempty-ok")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    records = out / RECORDS
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and records.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stdout.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_records(records)
    # a kill during a summary write leaves dynaprag's own temporary file
    (out / f".{SUMMARY}.dynaprag-tmp-{proc.pid}").write_text("{half")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    final = read_records(records)
    assert [r["id"] for r in final] == [q["id"] for q in QUESTIONS] and final[:len(first)] == first
    assert not list(out.glob("*dynaprag-tmp*"))
    assert_intact(made)
    ours = {RUN_MARKER, ".lock", CONFIG, RECORDS, SUMMARY}
    assert {p.name for p in out.iterdir()} == ours | {p.name for p in made}


# --- data download --dest ---------------------------------------------------------------------------

def _hotpot(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "hotpot_src.json"
    src.write_text(json.dumps([{"_id": "h1", "question": "Which came first?", "answer": "Alpha",
                                "supporting_facts": [["Alpha", 0]], "context": [["Alpha", ["Alpha."]]]}]))
    return src, hashlib.sha256(src.read_bytes()).hexdigest()


def test_download_keeps_the_users_files_and_replaces_only_its_own(tmp_path):
    src, sha = _hotpot(tmp_path)
    dest = tmp_path / "raw"
    made = user_files(dest / "hotpotqa")
    legacy = dest / "hotpotqa" / f"hotpot_dev_distractor_v1.json.partial-{dead_pid()}"  # unmarked: a user's
    legacy.write_text("mine too")
    made[legacy] = b"mine too"
    mine = dest / "hotpotqa" / "hotpot_dev_distractor_v1.json"
    mine.write_text("my own edited copy")
    args = ["data", "download", "hotpotqa", "--dest", str(dest), "--url", src.as_uri(), "--sha256", sha]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--overwrite" in flat(refused.output)
    assert "not downloaded by dynaprag" in flat(refused.output)
    assert mine.read_text() == "my own edited copy"
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert mine.read_bytes() == src.read_bytes()
    src.write_text(src.read_text().replace("Alpha.", "Alpha!"))  # a new release: dynaprag's file is replaced
    sha2 = hashlib.sha256(src.read_bytes()).hexdigest()
    result = CliRunner().invoke(app, ["data", "download", "hotpotqa", "--dest", str(dest), "--url", src.as_uri(),
                                      "--sha256", sha2])
    assert result.exit_code == 0, result.output
    assert mine.read_bytes() == src.read_bytes()
    assert_intact(made)


# --- index folders ----------------------------------------------------------------------------------

def test_index_build_never_replaces_or_rebuilds_a_folder_that_is_not_an_index(tmp_path):
    from dynaprag.corpus import Passage
    from dynaprag.retrieval.bm25 import BM25Retriever

    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"author": "me"}))  # a user's meta.json
    (folder / "paper.tex").write_text("mine")
    made = user_files(tmp_path)
    corpus = [Passage("a", "Alpha", "Alpha is a letter."), Passage("b", "Beta", "Beta follows alpha.")]
    with pytest.raises(FileExistsError, match="not a dynaprag index"):
        BM25Retriever.build(corpus, folder, progress=False)
    assert (folder / "paper.tex").read_text() == "mine"
    corpus_file = tmp_path / "c.jsonl"
    corpus_file.write_text("".join(json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n" for p in corpus))
    result = CliRunner().invoke(app, ["index", "build", "--corpus", str(corpus_file), "--backend", "bm25",
                                      "--index-dir", str(folder), "--rebuild"])
    assert result.exit_code == 2 and "not a dynaprag index" in flat(result.output)
    assert (folder / "paper.tex").read_text() == "mine"
    assert not list(tmp_path.glob(".work.dynaprag-*"))
    assert_intact(made)
