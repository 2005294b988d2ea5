"""A tiny SQuAD v1.1 in the released JSON layout (and as hub rows), for tests without the hub."""

from __future__ import annotations

import json
from pathlib import Path

CITIES = [("Arlen", "Vessa", "blue"), ("Borin", "Tamm", "green"), ("Cadix", "Orro", "red"), ("Delft", "Ilse", "grey"),
          ("Emor", "Kalla", "white"), ("Farro", "Nube", "black"), ("Gesh", "Pira", "gold"), ("Holm", "Ruda", "pink"),
          ("Ixen", "Sorra", "brown"), ("Jura", "Welle", "violet"), ("Kemp", "Yonne", "amber"), ("Lodi", "Zeta", "teal")]


def _article(city: str, river: str, colour: str, qid: str) -> dict:
    context = f"{city} is an old town. The river {river} runs through {city}. Its houses are painted {colour}."
    return {"title": city, "paragraphs": [{"context": context, "qas": [
        {"id": f"{qid}-river", "question": f"Which river runs through {city}?",
         "answers": [{"text": river, "answer_start": context.index(river)},
                     {"text": f"The river {river}", "answer_start": context.index(f"The river {river}")}]},
        {"id": f"{qid}-colour", "question": f"What colour are the houses of {city}?",
         "answers": [{"text": colour, "answer_start": context.index(colour)}]},
    ]}]}


def squad_json(split: str) -> dict:
    cities = CITIES[:10] if split == "train" else CITIES[10:]
    return {"version": "1.1", "data": [_article(c, r, k, f"{split}{i}") for i, (c, r, k) in enumerate(cities)]}


def write_squad(folder: Path, bad_answer_start: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train-v1.1.json"), ("validation", "dev-v1.1.json")):
        data = squad_json(split)
        if bad_answer_start and split == "train":
            data["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 2
        (folder / name).write_text(json.dumps(data))
    return folder


def hub_rows(split: str) -> list[dict]:
    """The same data as ``datasets.load_dataset("rajpurkar/squad", split=split)`` rows."""
    return [
        {"id": qa["id"], "title": article["title"], "context": paragraph["context"], "question": qa["question"],
         "answers": {"text": [a["text"] for a in qa["answers"]], "answer_start": [a["answer_start"] for a in qa["answers"]]}}
        for article in squad_json(split)["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]
    ]
