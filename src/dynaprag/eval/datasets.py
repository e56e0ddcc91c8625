"""Benchmark datasets: one :class:`Example` type, a registry of datasets, loaders per file format.

Two kinds of files load into the same :class:`Example`:

* **JSONL** (``id, question, answers`` plus optional fields), the schema of
  ``../shared/data/questions/*.jsonl`` and of any user file (the generic loader);
* the **official release formats** of HotpotQA, 2WikiMultihopQA, StrategyQA, IIRC, PopQA,
  ComplexWebQuestions, NQ-open, TriviaQA and WebQuestions (and DPR's QA CSV), read by
  :mod:`dynaprag.eval.release_formats`, so a user holding those files can run them without
  converting anything. FlashRAG's JSONL (``golden_answers`` for ``answers``) is the generic one.

Oracle fields (gold facts, decompositions, supporting ids and titles, context paragraphs) are
kept on the example for scoring only: the runner passes a method nothing but
``example.question``.

A damaged file fails with a :class:`DatasetError` naming the file and the line (JSONL, TSV, or
the line of a non-UTF-8 byte) or the record (official JSON lists) and the field, and says what
was expected. That includes a ``\ud800`` escape (a lone surrogate: valid JSON, but no
character a tokenizer can encode), a duplicate id (named with both places), and a TSV quote
left open (named at the line where the row starts).

>>> ex = Example.from_record({"id": "q1", "question": "Is water wet?", "answers": ["yes"]})
>>> ex.yes_no, ex.answers
(True, ('yes',))
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from dynaprag.config import ConfigError
from dynaprag.corpora import json_problem
from dynaprag.eval.metrics import normalize_answer
from dynaprag.registry import Registry

__all__ = ["DATASETS", "FORMATS", "DatasetError", "DatasetSpec", "Example", "corpus_path",
           "detect_format", "link_gold_facts", "load_examples", "questions_path"]


class DatasetError(ValueError):
    """A malformed question file; the message names the file (and the line or record)."""


@dataclass(frozen=True)
class Example:
    """One benchmark question with its gold answers and the oracle data used only for scoring."""

    id: str
    question: str
    answers: tuple[str, ...]
    dataset: str = ""
    type: str | None = None
    gold_ids: tuple[str, ...] = ()  # supporting passages' ids in the dataset's corpus
    gold_titles: tuple[str, ...] = ()  # supporting passages' titles (official files have no ids)
    oracle: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    where: str = field(default="", compare=False, hash=False)  # "line 3" or "record 2" of its file

    @property
    def yes_no(self) -> bool:
        """True when every gold answer is yes or no (scored by accuracy as well as EM/F1)."""
        return bool(self.answers) and all(normalize_answer(a) in ("yes", "no") for a in self.answers)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], dataset: str = "") -> "Example":
        """Build from a JSONL record: ``id``, ``question``, ``answers`` (list or string; ``answer``
        and FlashRAG's ``golden_answers`` are accepted too), optional ``dataset``, ``type``, ``supporting_doc_ids``,
        ``supporting_titles``; every other field goes to ``oracle``."""
        missing = [k for k in ("id", "question") if k not in record]
        if missing:
            raise KeyError(f"missing field {missing[0]!r} (a question needs id, question, answers)")
        answers = record.get("answers", record.get("answer", record.get("golden_answers")))  # FlashRAG's key
        if answers is None:
            raise KeyError("missing field 'answers'")
        if isinstance(answers, _SCALARS):
            answers = [answers]
        if not isinstance(answers, list):
            raise TypeError(f"'answers': expected a string or a list of strings, got {type(answers).__name__}")
        wrong = next((a for a in answers if not isinstance(a, _SCALARS)), _SCALARS)
        if wrong is not _SCALARS:
            raise TypeError("'answers': expected a string or a list of strings, "
                            f"got {'None' if wrong is None else type(wrong).__name__} in the list")
        answers = [_answer_text(a) for a in answers]
        if not answers or not all(a.strip() for a in answers):
            raise ValueError("'answers' must hold at least one non-empty answer")
        qid, question = record["id"], record["question"]
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or not str(qid).strip():
            raise TypeError(f"'id': expected a string or an integer, got {type(qid).__name__}")
        if not isinstance(question, str):
            raise TypeError(f"'question': expected a string, got {type(question).__name__}")
        if not question.strip():
            raise ValueError("'question' is empty")
        check_unicode("question", question)
        for answer in answers:
            check_unicode("answers", answer)
        # null marks a supporting passage missing from the corpus: gold that cannot be retrieved
        gold_ids = _string_list(record, "supporting_doc_ids", (str, int, type(None)))
        gold_titles = _string_list(record, "supporting_titles", (str,))
        if not isinstance(record.get("type"), (str, type(None))):
            raise TypeError(f"'type': expected a string, got {type(record['type']).__name__}")
        known = {"id", "question", "answers", "answer", "golden_answers", "dataset", "type", "supporting_doc_ids",
                 "supporting_titles"}
        return cls(id=str(qid), question=question.strip(), answers=tuple(answers),
                   dataset=str(record.get("dataset") or dataset), type=record.get("type"),
                   gold_ids=tuple(str(i) for i in gold_ids), gold_titles=tuple(gold_titles),
                   oracle={k: v for k, v in record.items() if k not in known})


_SCALARS = (str, bool, int, float)


def check_unicode(key: str, text: str, fix: str = "fix the escape in the file") -> str:
    """``text``, or a ValueError naming ``key`` when it holds a lone surrogate (``\ud800``).

    JSON allows the escape, but it is no character: a tokenizer cannot encode it. (Python also
    turns a command-line byte that is not UTF-8 into one, ``\xe9`` into ``\udce9``.)
    """
    bad = next((c for c in text if "\ud800" <= c <= "\udfff"), None)
    if bad is not None:
        raise ValueError(f"{key!r}: holds the lone surrogate \\u{ord(bad):04x} (half of a UTF-16 pair, not a "
                         f"character); {fix}")
    return text


def _string_list(record: Mapping[str, Any], key: str, kinds: tuple[type, ...]) -> list:
    """``record[key]`` as a list whose items are of ``kinds`` (missing or null: empty)."""
    value = record.get(key) or []
    if not isinstance(value, list):
        raise TypeError(f"{key!r}: expected a list, got {type(value).__name__}")
    if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{key!r}: expected a list of strings")
    return value


def _answer_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclass(frozen=True)
class DatasetSpec:
    """A benchmark: where its files sit in a data dir, how it is scored, which exemplars it uses."""

    name: str
    title: str
    corpus: str | None  # file under DATA_DIR/corpus/ to retrieve from
    exemplars: str  # exemplar set in data/exemplars.yaml
    official_format: str  # loader in FORMATS for the official release file
    yes_no: bool = False
    gold_passages: bool = True  # whether recall of gold passages can be computed
    release: str = ""  # where to get the questions when `dynaprag data download` has no release of it


DATASETS: Registry[DatasetSpec] = Registry("dataset")
FORMATS: Registry[Callable[[Path, str], Iterator[Example]]] = Registry("dataset format")


def questions_path(data_dir: str | Path, name: str) -> Path:
    """``DATA_DIR/questions/NAME.jsonl``."""
    DATASETS.get(name)
    return Path(data_dir) / "questions" / f"{name}.jsonl"


def corpus_path(data_dir: str | Path, name: str) -> Path | None:
    """The retrieval corpus of dataset ``name`` inside ``data_dir`` (None if it has none)."""
    spec = DATASETS.get(name)
    return Path(data_dir) / "corpus" / spec.corpus if spec.corpus else None


def _not_utf8(path: Path, data: bytes, exc: UnicodeDecodeError, line: int | None = None) -> DatasetError:
    """The error for bytes that are not UTF-8, naming the file and the line they are on."""
    line = line if line is not None else data.count(b"\n", 0, exc.start) + 1
    return DatasetError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                        "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def _read_text(path: Path) -> str:
    """A whole question file as text; a non-UTF-8 byte is an error naming its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, data, exc) from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line; a non-UTF-8 byte is an error naming its line."""
    with open(path, "rb") as handle:
        for line_no, data in enumerate(handle, 1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, data, exc, line_no) from None
            if line.strip():
                yield line_no, line


def load_jsonl(path: Path, dataset: str = "") -> Iterator[Example]:
    """The generic loader: one JSON object per line with ``id, question, answers``."""
    for line_no, line in _lines(path):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("a line must hold a JSON object")
            yield dataclasses.replace(Example.from_record(record, dataset), where=f"line {line_no}")
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{line_no}: not valid JSON ({json_problem(exc)})") from None
        except (KeyError, ValueError, TypeError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
            raise DatasetError(f"{path}:{line_no}: {message}") from None


def _read_json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: not valid JSON ({json_problem(exc)})") from None
    if isinstance(data, dict):  # some releases wrap the list, e.g. {"data": [...]}
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{path}: expected a JSON list of objects")
    return data


def _field(path: Path, index: int, record: Mapping, key: str) -> Any:
    if key not in record:
        raise DatasetError(f"{path}: record {index}: missing field {key!r}")
    return record[key]


def _text(path: Path, index: int, record: Mapping, key: str) -> str:
    """A string field of an official record, stripped; another type is an error naming the record."""
    value = _field(path, index, record, key)
    if not isinstance(value, str):
        raise DatasetError(f"{path}: record {index}: {key!r}: expected a string, got {type(value).__name__}")
    try:
        return check_unicode(key, value).strip()
    except ValueError as exc:
        raise DatasetError(f"{path}: record {index}: {exc}") from None


def _unique(items) -> tuple:
    return tuple(dict.fromkeys(items))


def _is_nq_open(path: Path) -> bool:
    """Whether a JSONL file's first line is an NQ-open record: ``question`` and an ``answer`` list, no ``id``."""
    with open(path, "rb") as handle:
        first = next((line for line in handle if line.strip()), b"")
    try:
        record = json.loads(first)
    except ValueError:  # not JSON or not UTF-8: the JSONL loader names the line
        return False
    return isinstance(record, dict) and "id" not in record and isinstance(record.get("answer"), list)


def detect_format(path: str | Path) -> str:
    """Guess a file's format from its suffix and, for ``.json``, the keys of its first record."""
    path = Path(path)
    if path.suffix in (".jsonl", ".ndjson"):
        return "nq-open" if _is_nq_open(path) else "jsonl"
    if path.suffix == ".tsv":
        return "popqa"
    if path.suffix == ".csv":
        return "dpr-qa"
    records = _read_json_list(path)
    if not records:
        raise DatasetError(f"{path}: no questions in the file (an empty JSON list)")
    keys = set(records[0])
    for fmt, needed in (("2wikimultihopqa", {"_id", "evidences"}), ("hotpotqa", {"_id", "supporting_facts"}),
                        ("strategyqa", {"qid", "answer"}), ("iirc", {"questions", "links"}),
                        ("cwq", {"ID", "answers"}), ("triviaqa", {"QuestionId", "Answer"}),
                        ("webquestions", {"utterance", "targetValue"})):
        if needed <= keys:
            return fmt
    raise DatasetError(f"{path}: cannot tell the dataset format; pass format= (one of {', '.join(FORMATS)})")


def load_examples(path: str | Path, *, format: str = "auto", dataset: str = "",
                  limit: int | None = None) -> list[Example]:
    """Load a question file in any registered format; ids must be unique, and there must be some.

    ``format="auto"`` detects the format (see :func:`detect_format`). ``limit`` keeps the first
    ``limit`` questions (at least 1). A file without questions is an error rather than a run
    with no numbers.
    """
    path = Path(path)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit: must be at least 1, got {limit}; pass limit=None for every question")
    if not path.is_file():
        raise DatasetError(f"question file not found: {path}")
    fmt = detect_format(path) if format == "auto" else format
    loader = FORMATS.get(fmt)
    examples, seen = [], {}
    for index, ex in enumerate(loader(path, dataset or ("" if fmt == "jsonl" else fmt))):
        where = ex.where or f"question {index + 1}"
        if ex.id in seen:
            here = f"{path}:{where[5:]}" if where.startswith("line ") else f"{path}: {where}"
            raise DatasetError(f"{here}: duplicate question id {ex.id!r} (first on {seen[ex.id]}); ids must be unique")
        seen[ex.id] = where
        examples.append(ex)
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        hint = ("one JSON object {\"id\", \"question\", \"answers\"} per line" if fmt == "jsonl"
                else f"the {fmt} release's question records")
        raise DatasetError(f"{path}: no questions in the file; it needs {hint}")
    return examples


def link_gold_facts(examples: list[Example], passages: Mapping[str, str]) -> list[Example]:
    """Attach gold passage ids to examples whose oracle ``gold_facts`` are passages of the corpus.

    StrategyQA's retrieval corpus pools the annotators' facts, so a question's gold passages
    are the corpus passages whose text equals one of its facts. ``passages`` maps text -> id.
    """
    out = []
    for ex in examples:
        facts = ex.oracle.get("gold_facts") or ()
        ids = _unique(passages[f.strip()] for f in facts if f.strip() in passages)
        out.append(ex if ex.gold_ids or not ids else dataclasses.replace(ex, gold_ids=ids))
    return out


FORMATS.register("jsonl", load_jsonl)

DATASETS.register("hotpotqa", DatasetSpec("hotpotqa", "HotpotQA", "wiki_paragraphs.jsonl", "hotpotqa", "hotpotqa"))
DATASETS.register("2wikimultihopqa", DatasetSpec("2wikimultihopqa", "2WikiMultihopQA", "wiki_paragraphs.jsonl",
                                                 "2wikimultihopqa", "2wikimultihopqa"))
DATASETS.register("strategyqa", DatasetSpec("strategyqa", "StrategyQA", "strategyqa_facts.jsonl", "strategyqa",
                                            "strategyqa", yes_no=True))
DATASETS.register("iirc", DatasetSpec("iirc", "IIRC", None, "iirc", "iirc"))
DATASETS.register("popqa", DatasetSpec("popqa", "PopQA", None, "popqa", "popqa"))
DATASETS.register("cwq", DatasetSpec("cwq", "ComplexWebQuestions", None, "cwq", "cwq", gold_passages=False))
_FLASHRAG = "or FlashRAG's {0} JSONL (huggingface.co/datasets/RUC-NLPIR/FlashRAG_datasets, {0}/test.jsonl)"
DATASETS.register("nq", DatasetSpec(
    "nq", "Natural Questions (open)", None, "default", "nq-open",
    release="NQ-open.efficientqa.test.1.1.jsonl (google-research-datasets/natural-questions, nq_open/), DPR's "
            "nq-test.qa.csv, " + _FLASHRAG.format("nq")))
DATASETS.register("triviaqa", DatasetSpec(
    "triviaqa", "TriviaQA", None, "default", "triviaqa",
    release="the TriviaQA release's unfiltered-web-dev.json (nlp.cs.washington.edu/triviaqa), DPR's "
            "trivia-test.qa.csv, " + _FLASHRAG.format("triviaqa")))
DATASETS.register("webquestions", DatasetSpec(
    "webquestions", "WebQuestions", None, "default", "webquestions",
    release="webquestions.examples.test.json (worksheets.codalab.org, Berant et al. 2013), DPR's "
            "webquestions-test.qa.csv, " + _FLASHRAG.format("web_questions")))
DATASETS.register("demo", DatasetSpec("demo", "dynaprag demo", None, "default", "jsonl"))

# the official release readers register themselves in FORMATS; they build on the helpers above
from dynaprag.eval import release_formats  # noqa: E402,F401
