"""Readers of the official release formats, one per benchmark, registered in ``FORMATS``.

A user holding a benchmark's original file runs it without converting anything:

* **multi-hop and entity QA**: HotpotQA (Yang et al., 2018) and 2WikiMultihopQA (Ho et al.,
  2020) JSON, StrategyQA (Geva et al., 2021), IIRC (Ferguson et al., 2020), PopQA's
  ``popQA.tsv`` (Mallen et al., 2023), ComplexWebQuestions (Talmor and Berant, 2018);
* **open-domain QA** (the datasets of FlashRAG's benchmark):

  - NQ-open (Lee et al., 2019; ``NQ-open.efficientqa.test.1.1.jsonl``): ``{"question",
    "answer": [...]}`` per line, no id;
  - DPR's QA CSV (Karpukhin et al., 2020; ``nq-test.qa.csv``, ``trivia-test.qa.csv``,
    ``webquestions-test.qa.csv``): ``question<TAB>['answer', ...]`` per line, no header, no id;
  - TriviaQA (Joshi et al., 2017; ``unfiltered-web-dev.json``): ``{"Data": [{"QuestionId",
    "Question", "Answer": {"Value", "Aliases", ...}}]}``;
  - WebQuestions (Berant et al., 2013; ``webquestions.examples.test.json``): ``[{"url",
    "targetValue": "(list (description X) ...)", "utterance"}]``, no id.

FlashRAG's own files (``{id, question, golden_answers, metadata}`` per line, for every dataset
it distributes) need no reader here: the generic JSONL loader of :mod:`dynaprag.eval.datasets`
takes ``golden_answers`` as the gold answers. A file without ids numbers its questions from 0
in file order (``"0"``, ``"1"``, ...), the order of FlashRAG's ``test_N`` ids. A damaged record
is a :class:`~dynaprag.eval.datasets.DatasetError` naming the file, the line or record, and the
field.

>>> parse_target_value('(list (description "Jazmine Sullivan") (description Dallas))')
('Jazmine Sullivan', 'Dallas')
"""
from __future__ import annotations

import ast
import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Iterator

from dynaprag.corpora import json_problem
from dynaprag.eval.datasets import (FORMATS, DatasetError, Example, _answer_text, _field, _lines, _not_utf8,
                                    _read_json_list, _read_text, _text, _unique, check_unicode)

__all__ = ["load_cwq", "load_dpr_qa", "load_hotpot_style", "load_iirc", "load_nq_open", "load_popqa",
           "load_strategyqa", "load_triviaqa", "load_webquestions", "parse_target_value"]

_DESCRIPTION = re.compile(r'\(description\s+(?:"((?:[^"\\]|\\.)*)"|([^()\s]+))\)')


def load_hotpot_style(path: Path, dataset: str = "hotpotqa") -> Iterator[Example]:
    """HotpotQA and 2WikiMultihopQA official JSON: ``_id, question, answer, type,
    supporting_facts [[title, sent]], context [[title, [sentences]]]`` (2Wiki adds ``evidences``).

    Gold passages are the supporting-fact titles; the context paragraphs stay in ``oracle``.
    """
    for i, rec in enumerate(_read_json_list(path)):
        facts = _field(path, i, rec, "supporting_facts")
        yield Example(id=str(_field(path, i, rec, "_id")), question=_text(path, i, rec, "question"),
                      answers=(_answer_text(_field(path, i, rec, "answer")),), dataset=dataset,
                      type=rec.get("type"), gold_titles=_unique(f[0] for f in facts), where=f"record {i}",
                      oracle={k: v for k, v in rec.items() if k not in ("_id", "question", "answer", "type")})


def load_strategyqa(path: Path, dataset: str = "strategyqa") -> Iterator[Example]:
    """StrategyQA official JSON: ``qid, question, answer (bool), facts, decomposition, evidence``."""
    for i, rec in enumerate(_read_json_list(path)):
        answer = _field(path, i, rec, "answer")
        if not isinstance(answer, bool):
            raise DatasetError(f"{path}: record {i}: 'answer' must be true or false, got {answer!r}")
        oracle = {k: v for k, v in rec.items() if k not in ("qid", "question", "answer")}
        if "facts" in oracle:
            oracle["gold_facts"] = oracle.pop("facts")
        yield Example(id=str(_field(path, i, rec, "qid")), question=_text(path, i, rec, "question"),
                      answers=(_answer_text(answer),), dataset=dataset, type="implicit_yes_no", oracle=oracle,
                      where=f"record {i}")


def load_iirc(path: Path, dataset: str = "iirc") -> Iterator[Example]:
    """IIRC official JSON: a list of passages, each with ``title, text, links, questions``.

    Answers follow the answer type: ``span`` (several spans joined with ", ", as the IIRC
    baseline's DROP-style conversion orders them), ``value`` (number with its unit, and the bare
    number as an alias), ``binary`` (yes/no). ``none`` (unanswerable) and ``bad`` questions are
    skipped: the methods here always answer, so they would only measure refusal. Gold passages
    are the titles of the question's context passages (``main`` is the passage's own title).
    """
    for i, passage in enumerate(_read_json_list(path)):
        title = _field(path, i, passage, "title")
        for q in _field(path, i, passage, "questions"):
            info = q.get("answer") or {}
            kind = info.get("type")
            if kind == "span":
                answers = [", ".join(s["text"].strip() for s in info.get("answer_spans", []))]
            elif kind == "value":
                value = str(info.get("answer_value", "")).strip()
                unit = str(info.get("answer_unit") or "").strip()
                answers = [f"{value} {unit}".strip(), value] if unit else [value]
            elif kind == "binary":
                answers = [str(info.get("answer_value", "")).strip().lower()]
            else:
                continue
            if not answers[0]:
                continue
            titles = _unique(title if c.get("passage") == "main" else c.get("passage")
                             for c in q.get("context", []))
            yield Example(id=str(q.get("qid")), question=_text(path, i, q, "question"), answers=tuple(answers),
                          dataset=dataset, type=kind, gold_titles=tuple(t for t in titles if t), where=f"record {i}",
                          oracle={"context": q.get("context", []), "main_title": title})


def load_popqa(path: Path, dataset: str = "popqa") -> Iterator[Example]:
    """PopQA's ``popQA.tsv``: ``id, subj, prop, obj, ..., question, possible_answers`` (a JSON list).

    The subject's Wikipedia title (``s_wiki_title``) is the gold passage title.
    """
    with io.StringIO(_read_text(path), newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if reader.fieldnames is None:  # reads the header line
            return
        rows = iter(reader)
        while True:
            line_no = reader.line_num + 1  # where the next row starts (a quoted field may span lines)
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DatasetError(f"{path}:{line_no}: bad TSV row ({exc})") from None
            try:
                if None in row.values() or None in row:
                    raise ValueError(f"expected {len(reader.fieldnames or [])} tab-separated fields, got "
                                     f"{len([v for v in row.values() if v is not None]) + len(row.get(None) or [])}"
                                     + (f" (a quote opened here is closed on line {reader.line_num})"
                                        if reader.line_num > line_no else ""))
                answers = json.loads(row["possible_answers"])
                if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                    raise ValueError("'possible_answers': expected a JSON list of strings")
                question, qid = check_unicode("question", row["question"]), row["id"]
                for answer in answers:
                    check_unicode("possible_answers", answer)
            except (KeyError, TypeError, ValueError) as exc:
                message = f"missing column {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
                raise DatasetError(f"{path}:{line_no}: bad PopQA row: {message}") from None
            title = row.get("s_wiki_title") or ""
            yield Example(id=str(qid), question=question.strip(), answers=tuple(answers), dataset=dataset,
                          type=row.get("prop"), gold_titles=(title,) if title else (), where=f"line {line_no}",
                          oracle={k: v for k, v in row.items() if k not in ("id", "question", "possible_answers")})


def load_cwq(path: Path, dataset: str = "cwq") -> Iterator[Example]:
    """ComplexWebQuestions official JSON: ``ID, question, answers [{answer, aliases}], sparql, ...``.

    Every answer and alias is a gold answer (scores take the maximum). CWQ has no gold passages.
    """
    for i, rec in enumerate(_read_json_list(path)):
        answers: list[str] = []
        for a in _field(path, i, rec, "answers"):
            answers += [a.get("answer") or ""] + list(a.get("aliases") or [])
        answers = [a for a in _unique(answers) if a]
        if not answers:
            continue
        yield Example(id=str(_field(path, i, rec, "ID")), question=_text(path, i, rec, "question"),
                      answers=tuple(answers), dataset=dataset, type=rec.get("compositionality_type"),
                      where=f"record {i}",
                      oracle={k: v for k, v in rec.items() if k not in ("ID", "question", "answers")})


def _answers(path: Path, where: str, key: str, value: Any) -> tuple[str, ...]:
    """A non-empty list of non-empty answer strings, or an error naming ``where`` and ``key``."""
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise DatasetError(f"{where}: {key!r}: expected a list of strings, got {value!r:.60}")
    answers = _unique(a.strip() for a in value if a.strip())
    if not answers:
        raise DatasetError(f"{where}: {key!r}: holds no non-empty answer")
    try:
        for answer in answers:
            check_unicode(key, answer)
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    return answers


def _question(where: str, key: str, value: Any) -> str:
    """A non-empty question string, stripped, or an error naming ``where`` and ``key``."""
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: {key!r}: expected a non-empty string, got {value!r:.60}")
    try:
        return check_unicode(key, value).strip()
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from None


def load_nq_open(path: Path, dataset: str = "nq") -> Iterator[Example]:
    """NQ-open JSONL: ``{"question", "answer": [...]}`` per line; ids count the questions from 0."""
    for index, (line_no, line) in enumerate(_lines(path)):
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON ({json_problem(exc)})") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: a line must hold a JSON object")
        for key in ("question", "answer"):
            if key not in record:
                raise DatasetError(f"{where}: missing field {key!r} (an NQ-open line has question, answer)")
        yield Example(id=str(index), question=_question(where, "question", record["question"]),
                      answers=_answers(path, where, "answer", record["answer"]), dataset=dataset,
                      where=f"line {line_no}",
                      oracle={k: v for k, v in record.items() if k not in ("question", "answer")})


def load_dpr_qa(path: Path, dataset: str = "") -> Iterator[Example]:
    """DPR's ``*.qa.csv``: ``question<TAB>['answer', ...]`` (a Python list literal), no header."""
    for index, (line_no, line) in enumerate(_lines(path)):
        where = f"{path}:{line_no}"
        question, tab, answers = line.rstrip("\r\n").partition("\t")
        if not tab:
            raise DatasetError(f"{where}: expected question<TAB>answers (DPR's qa.csv), found no tab")
        try:
            parsed = ast.literal_eval(answers.strip())
        except (ValueError, SyntaxError):
            raise DatasetError(f"{where}: answers: expected a list literal like ['a', 'b'], "
                               f"got {answers.strip()!r:.60}") from None
        yield Example(id=str(index), question=_question(where, "question", question),
                      answers=_answers(path, where, "answers", parsed), dataset=dataset, where=f"line {line_no}")


def load_triviaqa(path: Path, dataset: str = "triviaqa") -> Iterator[Example]:
    """TriviaQA's JSON: ``Data: [{QuestionId, Question, Answer: {Value, Aliases, ...}}]``.

    The gold answers are the answer's ``Value`` then its ``Aliases`` (scores take the maximum,
    as TriviaQA's own evaluation does over the aliases).
    """
    for i, rec in enumerate(_read_json_list(path)):
        where = f"{path}: record {i}"
        answer = _field(path, i, rec, "Answer")
        if not isinstance(answer, dict):
            raise DatasetError(f"{where}: 'Answer': expected an object with Value and Aliases")
        value, aliases = answer.get("Value"), answer.get("Aliases") or []
        if not isinstance(aliases, list):
            raise DatasetError(f"{where}: 'Answer.Aliases': expected a list of strings, got {aliases!r:.60}")
        answers = _answers(path, where, "Answer", ([value] if isinstance(value, str) else []) + aliases)
        yield Example(id=str(_field(path, i, rec, "QuestionId")), question=_text(path, i, rec, "Question"),
                      answers=answers, dataset=dataset, where=f"record {i}",
                      oracle={k: v for k, v in rec.items() if k not in ("QuestionId", "Question", "Answer")})


def parse_target_value(target: str) -> tuple[str, ...]:
    """The answers of a WebQuestions ``targetValue``: ``(list (description X) (description "Y Z"))``."""
    return tuple(quoted.replace('\\"', '"') if quoted else bare for quoted, bare in _DESCRIPTION.findall(target))


def load_webquestions(path: Path, dataset: str = "webquestions") -> Iterator[Example]:
    """WebQuestions' JSON: ``[{url, targetValue, utterance}]``; ids count the questions from 0."""
    for i, rec in enumerate(_read_json_list(path)):
        where = f"{path}: record {i}"
        target = _field(path, i, rec, "targetValue")
        if not isinstance(target, str) or not target.startswith("(list"):
            raise DatasetError(f"{where}: 'targetValue': expected '(list (description ...) ...)', "
                               f"got {target!r:.60}")
        answers = _answers(path, where, "targetValue", list(parse_target_value(target)))
        yield Example(id=str(i), question=_text(path, i, rec, "utterance"), answers=answers, dataset=dataset,
                      where=f"record {i}", oracle={"url": rec.get("url", "")})


FORMATS.register("hotpotqa", load_hotpot_style)
FORMATS.register("2wikimultihopqa", load_hotpot_style)
FORMATS.register("strategyqa", load_strategyqa)
FORMATS.register("iirc", load_iirc)
FORMATS.register("popqa", load_popqa)
FORMATS.register("cwq", load_cwq)
FORMATS.register("nq-open", load_nq_open)
FORMATS.register("dpr-qa", load_dpr_qa)
FORMATS.register("triviaqa", load_triviaqa)
FORMATS.register("webquestions", load_webquestions)
