"""Any text-to-text task from your own files: one CSV or JSON-lines file per split.

    prefixlab-train task=local task.train_file=train.jsonl task.validation_file=dev.jsonl \
        task.test_file=test.jsonl task.source_column=question task.target_column=answer

The format follows the extension (``.csv``, ``.jsonl``/``.json``) unless ``task.file_format``
says ``csv`` or ``jsonl``. Rows of one evaluation split that share a source become one
example whose references are all their targets (multi-reference, as in E2E); training uses
every row. Scored with corpus BLEU, ROUGE-1/2/L and exact match: the module builds its
scorer from the task name alone, so the metrics are the same for every local task.
Any problem is one DataError naming the file, the split and the column or row.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from prefixlab.tasks.scoring import generation_scores
from prefixlab.tasks.base import SPLITS, Check, DataError, Example, TaskOptions

FORMATS = ("csv", "jsonl")


@dataclass
class LocalFilesOptions(TaskOptions):
    """``task.*`` of task=local: one file per split and its columns."""

    schema_name = "local_schema"
    train_file: Optional[str] = field(default=None, metadata={"help": "CSV or JSON-lines file of the train split"})
    validation_file: Optional[str] = field(default=None, metadata={"help": "file of the validation split"})
    test_file: Optional[str] = field(default=None, metadata={"help": "file of the test split"})
    source_column: str = field(default="source", metadata={"help": "column of the input text"})
    target_column: str = field(default="target", metadata={"help": "column of the target text"})
    file_format: Optional[str] = field(default=None, metadata={"help": "csv | jsonl (null: from the extension)"})
    instruction: Optional[str] = field(default=None, metadata={"help": "the instruction the prompt starts with (null: a generic one)"})

    def checks(self) -> list[Check]:
        return [(self.file_format in (None, *FORMATS), "file_format", self.file_format, f"{' | '.join(FORMATS)}, or null (by extension)")]


class LocalFiles:
    name = "local"
    options = LocalFilesOptions
    instruction = "Write the output for this input."
    answer_cue = "Output:"
    score = staticmethod(generation_scores)
    metric_names = ("bleu", "rouge1", "rouge2", "rougeL", "exact_match")

    def __init__(
        self,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        source_column: str = "source",
        target_column: str = "target",
        file_format: str | None = None,
        instruction: str | None = None,
    ) -> None:
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.source_column, self.target_column = source_column, target_column
        if file_format is not None and file_format not in FORMATS:
            raise DataError(f"task.file_format={file_format!r}: expected one of {', '.join(FORMATS)} (or null: by extension)")
        self.file_format = file_format
        if instruction:
            self.instruction = instruction

    def _format(self, path: Path) -> str:
        if self.file_format:
            return self.file_format
        if path.suffix.lower() == ".csv":
            return "csv"
        if path.suffix.lower() in (".jsonl", ".json"):
            return "jsonl"
        raise DataError(f"{path}: cannot tell the format from the extension; set task.file_format=csv or jsonl")

    def _rows(self, path: Path, split: str) -> list[dict]:
        where = f"{path} ({split} split)"
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first column's name
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"{where}: cannot read the file: {error}") from error
        if self._format(path) == "csv":
            # a field may be as long as the file (an article, a document); the csv module's default is 128 KiB
            csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
            try:
                reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted fields may span lines
                columns = list(reader.fieldnames or ())
                repeated = sorted({c for c in columns if columns.count(c) > 1})
                if repeated:  # DictReader would silently keep the last column of each name
                    raise DataError(f"{where}: the header names column(s) {repeated} more than once; "
                                    f"rename them so that each column has its own name")
                for column in (self.source_column, self.target_column):
                    if column not in columns:
                        raise DataError(f"{where}: no column {column!r}; the header has {columns}")
                return [{**row, "_row": reader.line_num} for row in reader]  # the row's (last) line in the file
            except csv.Error as error:
                raise DataError(f"{where}: not valid CSV: {error}") from error
        rows = []
        # JSON lines end at \n only: str.splitlines() would also break at U+2028, U+0085 and the
        # like, which JSON allows unescaped inside strings
        for i, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: line {i} is not valid JSON: {error}") from error
            if not isinstance(row, dict):
                raise DataError(f"{where}: line {i} is not a JSON object")
            for column in (self.source_column, self.target_column):
                if column not in row:
                    raise DataError(f"{where}: line {i} has no column {column!r}; it has {sorted(row)}")
            rows.append({**row, "_row": i})
        return rows

    def load_split(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        file = self.files[split]
        if not file:
            raise DataError(f"task {self.name!r}: no file for the {split} split; set task.{split}_file")
        path = Path(file).expanduser()
        pairs = []
        for row in self._rows(path, split):
            values = []
            for column in (self.source_column, self.target_column):
                value = row[column]
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"{path} ({split} split): row {row['_row']}: column {column!r} is empty or not text")
                values.append(value.strip())
            pairs.append((row["_row"], *values))
        if not pairs:
            raise DataError(f"{path} ({split} split): no rows")
        if split == "train":
            return [Example(f"{split}-{n}", source, target, (target,)) for n, source, target in pairs]
        groups: dict[str, tuple[int, list[str]]] = {}
        for n, source, target in pairs:
            refs = groups.setdefault(source, (n, []))[1]
            if target not in refs:
                refs.append(target)
        return [Example(f"{split}-{n}", source, refs[0], tuple(refs)) for source, (n, refs) in groups.items()]
