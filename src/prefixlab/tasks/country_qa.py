"""Closed-book country questions generated from the PyPI package ``countryinfo`` (its ~250
country records): capital, region, subregion, demonym, ISO currency code, calling code.

Every question about one country lands in the same split (80/10/10 of countries with
``split_seed``), so the test split asks about countries never seen in training; the
model has to know the facts, not memorise them from training pairs. A field with several
values (Bolivia's currencies BOB and BOV) gives several accepted references.
Scored like SQuAD: exact match and token F1 after SQuAD's answer normalization.

``country_qa_extractive`` asks the same questions about the same countries (same split), with a
short context paragraph stated from the same facts, e.g. "The capital of France is Paris."; the
answer is a span of it (``load_spans``, for encoders). For LMs it is reading comprehension:
question + paragraph -> answer (``load_split``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

from prefixlab.tasks.scoring import squad
from prefixlab.tasks.base import SPLITS, DataError, Example, TaskOptions
from prefixlab.tasks.spans import SpanExample, spans_to_text_example
from prefixlab.tasks.splits import split_by_key

QUESTIONS = {  # countryinfo field -> question template
    "capital": "What is the capital of {country}?",
    "region": "In which region of the world is {country}?",
    "subregion": "In which subregion of the world is {country}?",
    "demonym": "What is the demonym of the people of {country}?",
    "currencies": "What is the ISO 4217 currency code of {country}?",
    "callingCodes": "What is the international calling code of {country}?",
}


def _values(raw) -> tuple[str, ...]:
    values = raw if isinstance(raw, (list, tuple)) else [raw]
    return tuple(dict.fromkeys(" ".join(str(v).split()) for v in values if v is not None and str(v).strip()))


@lru_cache(maxsize=1)
def country_questions() -> tuple[tuple[str, str, str, tuple[str, ...]], ...]:
    """(country, field, question, answers) for every country and field that has a value."""
    try:
        import countryinfo
    except ImportError as error:
        raise DataError("the country_qa task needs the PyPI package 'countryinfo': run `make setup`") from error
    rows = []
    for record in countryinfo.all_countries():
        info = record.info()
        country = " ".join(str(info.get("name") or "").split())
        if not country:
            continue
        for field, template in QUESTIONS.items():
            answers = _values(info.get(field))
            if answers:
                rows.append((country, field, template.format(country=country), answers))
    if not rows:
        raise DataError("countryinfo returned no country records")
    return tuple(sorted(rows))


@dataclass
class CountryQAOptions(TaskOptions):
    """``task.*`` of country_qa and country_qa_extractive."""

    schema_name = "country_qa_schema"
    split_seed: int = field(default=0, metadata={"help": "seed of the split by country"})


class CountryQA:
    name = "country_qa"
    options = CountryQAOptions
    instruction = "Answer the question with a short answer only."
    answer_cue = "Answer:"
    score = staticmethod(squad)
    metric_names = ("exact_match", "f1")

    def __init__(self, split_seed: int = 0) -> None:
        self.split_seed = split_seed

    def load_split(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        rows = country_questions()
        assignment = split_by_key([country for country, *_ in rows], self.split_seed)
        return [
            Example(f"{country}/{field}", question, answers[0], answers)
            for country, field, question, answers in rows
            if assignment[country] == split
        ]


# countryinfo field -> the sentence stating it; {value} is where the answer span goes. Several
# values (Bolivia's BOB and BOV) are joined with " and "; the span is the first, all are accepted.
STATEMENTS = {
    "capital": "The capital of {country} is {value}.",
    "region": "{country} lies in the world region {value}.",
    "subregion": "{country} belongs to the subregion {value}.",
    "demonym": "The people of {country} are called {value}.",
    "currencies": "The ISO 4217 currency code of {country} is {value}.",
    "callingCodes": "The international calling code of {country} is {value}.",
}


def country_paragraph(country: str, facts: dict[str, tuple[str, ...]]) -> tuple[str, dict[str, int]]:
    """The context paragraph and, per field, the character offset of its (first) value.

    Sentences come in an order shuffled per country (seeded by the name, so fixed across runs):
    a span head cannot find the capital by its position alone."""
    fields = [f for f in STATEMENTS if f in facts]
    random.Random(country).shuffle(fields)
    text, starts = "", {}
    for field in fields:
        before, _, after = STATEMENTS[field].partition("{value}")
        before, after = before.format(country=country), after.format(country=country)
        text += (" " if text else "") + before
        starts[field] = len(text)
        text += " and ".join(facts[field]) + after
    return text, starts


class CountryQAExtractive:
    name = "country_qa_extractive"
    options = CountryQAOptions
    instruction = "Answer the question with a short span copied from the passage."
    answer_cue = "Answer:"
    score = staticmethod(squad)
    metric_names = ("exact_match", "f1")

    def __init__(self, split_seed: int = 0) -> None:
        self.split_seed = split_seed

    def load_spans(self, split: str) -> list[SpanExample]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        rows = country_questions()
        # the closed-book task's assignment: a country is in the same split in both tasks
        assignment = split_by_key([country for country, *_ in rows], self.split_seed)
        facts: dict[str, dict[str, tuple[str, ...]]] = {}
        for country, field, _, answers in rows:
            facts.setdefault(country, {})[field] = answers
        paragraphs = {country: country_paragraph(country, fields) for country, fields in facts.items()}
        examples = []
        for country, field, question, answers in rows:
            if assignment[country] != split:
                continue
            context, starts = paragraphs[country]
            examples.append(SpanExample(f"{country}/{field}", question, context, starts[field], answers[0], answers))
        return examples

    def load_split(self, split: str) -> list[Example]:
        return [spans_to_text_example(e) for e in self.load_spans(split)]
