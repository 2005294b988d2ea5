"""prefixlab-generate: a base model plus one or more exported prefixes, prompts in, text out.

    prefixlab-generate --prefix outputs/<run>/prefix --task bbc_headline < articles.txt
    prefixlab-generate --prefix news=runs/a/prefix --prefix sport=runs/b/prefix --input prompts.jsonl

Input: one prompt per line, or JSON lines ``{"prompt": ..., "prefix": "<name>"}`` where each
line may name its own prefix: all lines go through the model in mixed batches, each
example with its own prefix. Output: one JSON line per prompt on stdout.
Prefixes are prefixlab exports or PEFT prefix-tuning adapters (detected by their files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NO_PREFIX = "none"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prefixlab-generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="base model (default: the one the first prefix was trained for)")
    parser.add_argument("--prefix", action="append", default=[], metavar="[NAME=]DIR",
                        help="an exported prefix folder; repeat for several (name them NAME=DIR)")
    parser.add_argument("--input", default="-", help="prompts file (text lines or JSON lines); - for stdin")
    parser.add_argument("--task", default=None, help="format prompts as this task did in training (e.g. bbc_headline)")
    parser.add_argument("--chat", action="store_true", help="wrap each prompt as a user turn of the chat template")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    return parser.parse_args(argv)


def _named_prefix_dirs(specs: list[str]) -> dict[str, Path]:
    named = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).parent.name or spec, spec
        if name in named:
            raise ValueError(f"--prefix name {name!r} given twice; name them NAME=DIR")
        named[name] = Path(path)
    return named


def _read_prompts(source: str, default_prefix: str | None) -> list[dict]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{source}: cannot read the prompts ({getattr(error, 'strerror', None) or error})") from None
    rows = []
    # a prompt ends at \n only (and a \r before it): U+2028, U+0085 and the like are text inside a prompt
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{source}:{number}: not valid JSON ({error})") from error
            if "prompt" not in row:
                raise ValueError(f"{source}:{number}: a JSON line needs a 'prompt' field")
        else:
            row = {"prompt": line}
        row.setdefault("prefix", default_prefix)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from prefixlab.errors import USER_ERRORS

    try:
        for line in run(args):
            print(json.dumps(line, ensure_ascii=False), flush=True)
    except (*USER_ERRORS, ValueError) as error:
        sys.exit(f"prefixlab-generate: error: {error}")


class MixedPrefixGenerator:
    """The Python API behind prefixlab-generate: one frozen model, named prefixes, and batches in
    which every example uses its own prefix (different lengths included).

        generator = MixedPrefixGenerator("embedded:smollm2-135m-instruct", {"news": "runs/a/prefix"})
        generator.generate([{"prompt": "...", "prefix": "news"}, {"prompt": "...", "prefix": "none"}])

    Works for decoder-only and encoder-decoder models; prefixes are prefixlab exports or PEFT
    prefix-tuning adapters (decoder-only). ``prompt_format``: "raw", "chat", or a task name
    (the prompt is then formatted exactly as that task did in training).
    """

    def __init__(self, model_name: str, prefix_dirs: dict[str, Path], prompt_format: str = "raw") -> None:
        from prefixlab.engine.prefixed_lm import PrefixedCausalLM
        from prefixlab.engine.prefixed_seq2seq import PrefixedSeq2SeqLM
        from prefixlab.training.model_loading import load_config, load_lm, load_tokenizer

        # trust_remote_code=False always: the model name may come from a prefix folder, which never opts in
        config = load_config(model_name, trust_remote_code=False)  # a wrong model name fails before anything loads
        self.model_name = model_name
        self.is_encoder_decoder = bool(config.is_encoder_decoder)
        lm = load_lm(model_name, trust_remote_code=False).requires_grad_(False).eval()
        self.tokenizer = load_tokenizer(model_name, trust_remote_code=False)
        self.model = (PrefixedSeq2SeqLM if self.is_encoder_decoder else PrefixedCausalLM)(lm)
        self.prefixes, self.infixes = {}, set()
        for name, directory in prefix_dirs.items():
            self._load(name, Path(directory))
        self.encode = self._encoder_for(prompt_format)

    def _load(self, name: str, directory: Path) -> None:
        from prefixlab.engine.export import PrefixFormatError, load_prefix
        from prefixlab.engine.peft_format import is_peft_prefix, load_peft_prefix

        geometry = self.model.geometry
        try:
            if is_peft_prefix(directory):
                self.prefixes[name] = load_peft_prefix(directory, geometry)
                return
            exported = load_prefix(directory, expected_model=self.model_name)
            fits = exported.geometry.model_type == geometry.model_type and all(
                geometry.sites.get(site) == g for site, g in exported.geometry.sites.items()
            )
            if not fits:
                raise PrefixFormatError(f"geometry {exported.geometry.to_dict()} does not fit {self.model_name} ({geometry.to_dict()})")
        except PrefixFormatError as error:
            raise PrefixFormatError(f"prefix {name}={directory}: {error}") from error
        self.prefixes[name] = exported.activations
        if exported.metadata.get("placement") == "infix":
            self.infixes.add(name)

    def _encoder_for(self, prompt_format: str):
        tokenizer = self.tokenizer
        if prompt_format == "chat":
            return lambda text: tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False
            )
        if prompt_format == "raw":
            return lambda text: tokenizer(text, add_special_tokens=self.is_encoder_decoder)["input_ids"]
        from prefixlab.data.formatting import PromptFormatter
        from prefixlab.tasks import build_task

        task = build_task(prompt_format)
        formatter = PromptFormatter(tokenizer, task.instruction, task.answer_cue, is_encoder_decoder=self.is_encoder_decoder)
        return formatter.prompt_ids

    def generate(self, prompts: list[dict], max_new_tokens: int = 32, num_beams: int = 1, batch_size: int = 8, progress: bool = False):
        """prompts: dicts with "prompt" and "prefix" (a loaded name, or None / "none" for the plain model).
        Yields each dict with "output" added, in order."""
        from tqdm import tqdm

        from prefixlab.engine.injection import PrefixActivations
        from prefixlab.engine.mixing import generate_mixed

        unknown = sorted({str(r.get("prefix")) for r in prompts if r.get("prefix") not in (*self.prefixes, None, NO_PREFIX)})
        if unknown:
            raise ValueError(f"prompts name prefixes {unknown} that were not loaded; loaded: {sorted(self.prefixes)}")
        tokenizer = self.tokenizer
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="generating", file=sys.stderr, disable=not progress):
            rows = prompts[start : start + batch_size]
            new_tokens = generate_mixed(
                self.model, [list(self.encode(r["prompt"])) for r in rows],
                [self.prefixes.get(r.get("prefix"), PrefixActivations({})) for r in rows],
                pad_token_id=tokenizer.pad_token_id, infix_rows=[r.get("prefix") in self.infixes for r in rows],
                max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False, eos_token_id=tokenizer.eos_token_id,
            )
            for row, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                yield {**row, "output": text.strip()}


def run(args: argparse.Namespace):
    from prefixlab.engine.peft_format import is_peft_prefix

    prefix_dirs = _named_prefix_dirs(args.prefix)
    for name, directory in prefix_dirs.items():  # before any model loads: a run folder given for its prefix/
        if not directory.is_dir():
            raise ValueError(f"--prefix {name}={directory}: no such folder")
        if not is_peft_prefix(directory) and not (directory / "prefix_config.json").is_file() \
                and (directory / "prefix" / "prefix_config.json").is_file():
            raise ValueError(f"--prefix {name}={directory} is a run folder; give its export: {directory / 'prefix'}")
    model_name = args.model
    if model_name is None:
        first = next(iter(prefix_dirs.values()), None)
        if first is None or is_peft_prefix(first):
            raise ValueError("give --model (the base model) when no prefixlab prefix names it")
        from prefixlab.engine.export import load_prefix

        model_name = load_prefix(first).base_model  # the whole folder checked: one line for any bad field
    prompts = _read_prompts(args.input, next(iter(prefix_dirs), None))
    prompt_format = args.task or ("chat" if args.chat else "raw")
    generator = MixedPrefixGenerator(model_name, prefix_dirs, prompt_format)
    yield from generator.generate(prompts, args.max_new_tokens, args.num_beams, args.batch_size, progress=len(prompts) > args.batch_size)


if __name__ == "__main__":
    main()
