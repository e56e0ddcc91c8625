"""Fetch official dataset releases with checksum verification (``dynaprag data download NAME``).

Each :class:`Release` records the official URL, the file's SHA-256 and where that checksum was
taken from. A download streams to a temp file while hashing, is refused on a mismatch (the temp
file is deleted), and only then moves into place; archives are unpacked with a guard against
paths escaping the destination. ``url=`` points at a mirror or a local ``file://`` copy; the
recorded checksum still applies unless ``sha256=`` replaces it.

Where no trustworthy checksum could be recorded (the release is served from a share whose file
may change), ``sha256`` is None and the download needs ``sha256=`` or ``allow_unverified=True``,
in which case the computed hash is reported so it can be pinned.

Temporary files carry dynaprag's mark and the writer's PID (:mod:`dynaprag.files`) and are
removed on failure; a download first sweeps those a killed download of the same file left in
``dest_dir``, and nothing else. ``dest_dir`` may hold the user's own files: the names dynaprag
put there are recorded in its ``.dynaprag-downloads.json``, and a download that would replace
a file or folder not recorded there is refused unless ``overwrite=True``.

>>> download("hotpotqa", "data/raw")                   # doctest: +SKIP
PosixPath('data/raw/hotpot_dev_distractor_v1.json')
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dynaprag.files import (TEMP_MARKER, atomic_write_json, remove_temp_dir, sha256_file, sweep_stale_of, temp_dir,
                            tmp_name)
from dynaprag.registry import Registry

__all__ = ["RELEASES", "ChecksumError", "Release", "download", "sha256_file"]

#: the names dynaprag downloaded or unpacked into a destination folder (what it may replace)
DOWNLOADED = ".dynaprag-downloads.json"


class ChecksumError(ValueError):
    """A downloaded file whose SHA-256 differs from the recorded one."""


@dataclass(frozen=True)
class Release:
    """An official release file of a dataset."""

    dataset: str
    url: str
    filename: str
    sha256: str | None
    checksum_source: str  # where the recorded checksum comes from
    question_file: str  # the file (inside the archive, if any) that the loaders read
    manual: bool = False  # the URL is a web page or shared folder, not a direct file


RELEASES: Registry[Release] = Registry("dataset release")


def _safe_extract(archive: Path, dest: Path) -> None:
    dest = dest.resolve()

    def check(name: str) -> None:
        target = (dest / name).resolve()
        if target != dest and dest not in target.parents:
            raise ValueError(f"{archive}: member {name!r} would be written outside {dest}")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                check(name)
            zf.extractall(dest)
        return
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            check(member.name)
            if member.issym() or member.islnk() or member.isdev():
                raise ValueError(f"{archive}: member {member.name!r} is a link or device; refusing to extract")
        tf.extractall(dest, filter="data")


def _is_archive(name: str) -> bool:
    return name.endswith((".zip", ".tgz", ".tar.gz", ".tar"))


def _ours(dest_dir: Path) -> set[str]:
    try:
        return set(json.loads((dest_dir / DOWNLOADED).read_text(encoding="utf-8"))["names"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _record(dest_dir: Path, names: list[str]) -> None:
    atomic_write_json(dest_dir / DOWNLOADED, {"names": sorted(_ours(dest_dir) | set(names))})


def _check_replace(dest_dir: Path, names: list[str], overwrite: bool) -> None:
    """Refuse to replace an entry of ``dest_dir`` that dynaprag did not put there."""
    if overwrite:
        return
    ours = _ours(dest_dir)
    theirs = [n for n in names if (dest_dir / n).exists() and n not in ours]
    if theirs:
        raise FileExistsError(f"{dest_dir / theirs[0]} exists and was not downloaded by dynaprag; move it away, "
                              f"choose another --dest, or pass --overwrite to replace it")


def download(name: str, dest_dir: str | Path, *, url: str | None = None, sha256: str | None = None,
             allow_unverified: bool = False, overwrite: bool = False, log: Callable[[str], None] = print) -> Path:
    """Download dataset ``name``'s release into ``dest_dir`` and return the question file's path.

    An existing file with the expected checksum is reused. Archives are unpacked into
    ``dest_dir`` (the archive itself is kept, so a rerun verifies instead of refetching).
    A file or folder that dynaprag did not put in ``dest_dir`` is replaced only with ``overwrite``.
    """
    release = RELEASES.get(name)
    source = url or release.url
    expected = (sha256 or release.sha256 or "").lower() or None
    if release.manual and url is None:
        raise ValueError(f"{name}: the official release is served from {release.url}, which cannot be fetched "
                         f"as one file; download {release.question_file} by hand, or pass url=")
    if expected is None and not allow_unverified:
        raise ChecksumError(f"{name}: no checksum is recorded for {source}; pass sha256=HEX "
                            "(or allow_unverified=True to fetch and print the hash)")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / release.filename
    extract = dest_dir / f".{name}.extract"
    sweep_stale_of(target)
    sweep_stale_of(extract)
    if target.exists() and expected and sha256_file(target) == expected:
        log(f"{target} already present (sha256 verified)")
    else:
        _check_replace(dest_dir, [release.filename], overwrite)
        tmp = tmp_name(target, "partial")
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(source, timeout=60) as response, open(tmp, "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if expected and actual != expected:
                raise ChecksumError(f"{name}: sha256 of {source} is {actual}, expected {expected}; "
                                    "the file was not kept")
            _record(dest_dir, [release.filename])
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        if not expected:
            log(f"{name}: downloaded WITHOUT verification; sha256 {actual} (pin it with sha256=)")
        else:
            log(f"{target}: sha256 verified")
    if _is_archive(release.filename):
        staging = temp_dir(extract)
        try:
            _safe_extract(target, staging)
            members = sorted(p.name for p in staging.iterdir() if p.name != TEMP_MARKER)
            _check_replace(dest_dir, members, overwrite)
            _record(dest_dir, members)
            for item in members:
                final = dest_dir / item
                if final.is_dir() and not final.is_symlink():
                    shutil.rmtree(final)
                os.replace(staging / item, final)
        finally:
            remove_temp_dir(staging)
    question_file = dest_dir / release.question_file
    if not question_file.exists():
        raise FileNotFoundError(f"{name}: expected {release.question_file} in {dest_dir} after download")
    return question_file


RELEASES.register("hotpotqa", Release(
    "hotpotqa", "http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json",
    "hotpot_dev_distractor_v1.json", "4e9ecb5c8d3b719f624d66b60f8d56bf227f03914f5f0753d6fa1b359d7104ea",
    "huggingface/datasets datasets/hotpot_qa/dataset_infos.json (download_checksums, 46,320,117 bytes)",
    "hotpot_dev_distractor_v1.json"))
RELEASES.register("2wikimultihopqa", Release(
    "2wikimultihopqa", "https://www.dropbox.com/s/ms2m13252h6xubs/data_ids_april7.zip?dl=1",
    "data_ids_april7.zip", None, "none recorded: a Dropbox share (github.com/Alab-NII/2wikimultihop README)",
    "dev.json"))
RELEASES.register("strategyqa", Release(
    "strategyqa", "https://storage.googleapis.com/ai2i/strategyqa/data/strategyqa_dataset.zip",
    "strategyqa_dataset.zip", "4911d85eb6721a93bed7645419df77e721808b32b9785dee14ad80e6249e0a90",
    "third-party pin (a public evaluation repository); not re-verified here (no internet)",
    "strategyqa_train.json"))
RELEASES.register("iirc", Release(
    "iirc", "https://iirc-dataset.s3.us-west-2.amazonaws.com/iirc_train_dev.tgz", "iirc_train_dev.tgz",
    "adfc34c8180337467105b2f534410c34e4fe43a82e6da03922440387802ca441",
    "third-party pin (a public evaluation repository); not re-verified here (no internet)",
    "iirc_train_dev/dev.json"))
RELEASES.register("popqa", Release(
    "popqa", "https://raw.githubusercontent.com/AlexTMallen/adaptive-retrieval/main/data/popQA.tsv",
    "popQA.tsv", None, "none recorded: a git branch file that may change", "popQA.tsv"))
RELEASES.register("cwq", Release(
    "cwq", "https://www.tau-nlp.sites.tau.ac.il/compwebq", "ComplexWebQuestions_dev.json", None,
    "none recorded: released through a web page and a Dropbox folder", "ComplexWebQuestions_dev.json",
    manual=True))
