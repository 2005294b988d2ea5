"""Tokenized splits cached between runs as Arrow files (``datasets``' ``save_to_disk``), under
``$PREFIXLAB_CACHE/tokenized/<task>/`` (default ``~/.cache/prefixlab``).

The key hashes everything the token ids depend on, so a stale entry is never used:
* the tokenizer's content, not its name: its full serialization (vocabulary, merges, normalizer,
  pre-tokenizer, post-processor, added tokens), special tokens and chat template; a tokenizer
  retrained and saved into the same folder misses;
* the prompt settings: the resolved style (chat / plain / source), instruction, answer cue,
  max source and target tokens, encoder-decoder or not, and the formatting code itself;
* the examples: their ids, sources and targets, in order (changed data, another subset or split
  misses).
An entry that cannot be read, whose ids do not match the examples, or whose content no longer
matches the checksum stored beside it (``checksum.json``: a flipped bit in an Arrow buffer is read
back without any error by ``datasets``) is deleted and rebuilt.
Entries are written to a temporary folder and renamed, so a crash never leaves half an entry
that looks valid, and parallel jobs writing the same key keep one copy.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from prefixlab.data import formatting
from prefixlab.training.model_loading import cache_root

log = logging.getLogger(__name__)


def tokenizer_fingerprint(tokenizer) -> str:
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # fast tokenizers: the whole tokenizer.json content
        digest.update(backend.to_str().encode())
    else:  # slow (sentencepiece / python) tokenizers: the vocabulary and their settings
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        digest.update(json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str).encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    digest.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id]).encode())
    digest.update(str(getattr(tokenizer, "chat_template", None)).encode())
    return digest.hexdigest()


def formatter_fingerprint(formatter: formatting.PromptFormatter) -> str:
    settings = {
        "style": formatter.style,  # resolved ("auto" became chat / plain / source)
        "instruction": formatter.instruction,
        "answer_cue": formatter.answer_cue,
        "max_source_tokens": formatter.max_source_tokens,
        "max_target_tokens": formatter.max_target_tokens,
        "is_encoder_decoder": formatter.is_encoder_decoder,
        "code": hashlib.sha256(inspect.getsource(formatting).encode()).hexdigest(),  # a changed formatter misses
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def examples_fingerprint(examples) -> str:
    digest = hashlib.sha256()
    for e in examples:
        for part in (e.id, e.source, e.target):
            digest.update(part.encode("utf-8", errors="surrogatepass"))
            digest.update(b"\0")
    return digest.hexdigest()


CHECKSUM_FILE = "checksum.json"


def content_checksum(ids: list[str], encoded) -> str:
    """sha256 of what an entry holds: the example ids and every prompt and target id."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(ids)).encode("utf-8", errors="surrogatepass"))
    for prompt_ids, target_ids in encoded:
        digest.update(json.dumps([list(prompt_ids), list(target_ids)]).encode())
    return digest.hexdigest()


class TokenizedCache:
    """``encoded(task, split, examples, encode)`` -> [(prompt_ids, target_ids)] per example, from the
    cache when the key matches, else computed with ``encode(example)`` and stored."""

    def __init__(self, tokenizer, formatter: formatting.PromptFormatter, root: Path | None = None) -> None:
        self.root = (root or cache_root()) / "tokenized"
        self.settings = hashlib.sha256(
            (tokenizer_fingerprint(tokenizer) + formatter_fingerprint(formatter)).encode()
        ).hexdigest()
        self.hits: list[str] = []

    def path(self, task: str, split: str, examples) -> Path:
        key = hashlib.sha256((self.settings + examples_fingerprint(examples)).encode()).hexdigest()[:32]
        return self.root / task / f"{split}-{key}"

    def encoded(self, task: str, split: str, examples, encode: Callable) -> list[tuple[list[int], list[int]]]:
        path = self.path(task, split, examples)
        if path.exists():
            cached = self._read(path, examples)
            if cached is not None:
                self.hits.append(split)
                return cached
            shutil.rmtree(path, ignore_errors=True)  # unreadable or not these examples: rebuild below
        encoded = [encode(e) for e in examples]
        try:
            self._write(path, examples, encoded)
        except OSError as error:  # a full or read-only cache costs time, not the run
            log.warning("could not cache tokenized %s split in %s: %s", split, path, error)
        return encoded

    @staticmethod
    def _read(path: Path, examples) -> list[tuple[list[int], list[int]]] | None:
        import datasets

        try:
            table = datasets.load_from_disk(str(path)).to_dict()
            if table["id"] != [e.id for e in examples]:
                raise ValueError("the cached ids are not these examples")
            encoded = list(zip(table["prompt_ids"], table["target_ids"]))
            stored = json.loads((path / CHECKSUM_FILE).read_text())["sha256"]
            if content_checksum(table["id"], encoded) != stored:
                raise ValueError("its content does not match its checksum (a damaged file)")
            return encoded
        except Exception as error:  # noqa: BLE001 (corrupt, truncated, foreign: whatever it is, rebuild)
            log.warning("tokenized cache entry %s is unusable (%s: %s); rebuilding it", path, type(error).__name__, error)
            return None

    @staticmethod
    def _write(path: Path, examples, encoded) -> None:
        import datasets

        path.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
        quiet = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # "Saving the dataset" bars for every split are noise
        try:
            columns = {"id": [e.id for e in examples], "prompt_ids": [p for p, _ in encoded], "target_ids": [t for _, t in encoded]}
            datasets.Dataset.from_dict(columns).save_to_disk(str(work / "data"))
            checksum = {"sha256": content_checksum(columns["id"], encoded)}
            (work / "data" / CHECKSUM_FILE).write_text(json.dumps(checksum))  # datasets ignores extra files
            try:
                (work / "data").rename(path)
            except OSError:  # another job wrote the same key first: theirs is identical
                if not path.exists():
                    raise
        finally:
            if not quiet:
                datasets.enable_progress_bars()
            shutil.rmtree(work, ignore_errors=True)
