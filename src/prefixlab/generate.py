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
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
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
    from .errors import USER_ERRORS

    try:
        for line in run(args):
            print(json.dumps(line, ensure_ascii=False), flush=True)
    except (*USER_ERRORS, ValueError) as error:
        sys.exit(f"prefixlab-generate: error: {error}")


def run(args: argparse.Namespace):
    import torch

    from .engine.export import PrefixFormatError, load_prefix
    from .engine.injection import PrefixActivations
    from .engine.mixing import stack_prefixes
    from .engine.peft_format import is_peft_prefix, load_peft_prefix
    from .engine.prefixed_lm import PrefixedCausalLM
    from .formatting import PromptFormatter
    from .methods import with_visibility
    from .model_loading import load_lm, load_config, load_tokenizer
    from .tasks import build_task

    prefix_dirs = _named_prefix_dirs(args.prefix)
    model_name = args.model
    if model_name is None:
        first = next(iter(prefix_dirs.values()), None)
        if first is None or is_peft_prefix(first):
            raise ValueError("give --model (the base model) when no prefixlab prefix names it")
        model_name = json.loads((first / "prefix_config.json").read_text())["base_model"]
    load_config(model_name)  # a wrong model name fails before anything loads
    prompts = _read_prompts(args.input, next(iter(prefix_dirs), None))
    unknown = sorted({r["prefix"] for r in prompts if r["prefix"] not in (*prefix_dirs, None, NO_PREFIX)})
    if unknown:
        raise ValueError(f"prompts name prefixes {unknown} that no --prefix gives; given: {sorted(prefix_dirs)}")

    lm = load_lm(model_name)
    lm.requires_grad_(False)
    tokenizer = load_tokenizer(model_name)
    model = PrefixedCausalLM(lm.eval())
    prefixes: dict[str, PrefixActivations] = {}
    infixes: set[str] = set()  # seen from the last prompt token on, not by the prompt
    for name, directory in prefix_dirs.items():
        if is_peft_prefix(directory):
            prefixes[name] = load_peft_prefix(directory, model.geometry)
            continue
        try:
            exported = load_prefix(directory, expected_model=model_name)
            model_sites = {s: model.geometry.sites.get(s) for s in exported.geometry.sites}
            if exported.geometry.model_type != model.geometry.model_type or model_sites != exported.geometry.sites:
                raise PrefixFormatError(
                    f"geometry {exported.geometry.to_dict()} does not fit {model_name} ({model.geometry.to_dict()})"
                )
        except PrefixFormatError as error:
            raise PrefixFormatError(f"--prefix {name}={directory}: {error}") from error
        prefixes[name] = exported.activations
        if exported.metadata.get("placement") == "infix":
            infixes.add(name)

    if args.task:
        task = build_task(args.task)
        formatter = PromptFormatter(tokenizer, task.instruction, task.answer_cue)
        encode = formatter.prompt_ids
    elif args.chat:
        encode = lambda text: tokenizer.apply_chat_template(  # noqa: E731
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
    else:
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731

    from tqdm import tqdm

    for start in tqdm(range(0, len(prompts), args.batch_size), desc="generating", file=sys.stderr, disable=len(prompts) <= args.batch_size):
        rows = prompts[start : start + args.batch_size]
        encoded = [list(encode(r["prompt"])) for r in rows]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(encoded):
            ids[i, width - len(e):] = torch.tensor(e)
            mask[i, width - len(e):] = 1
        batch_prefix = stack_prefixes([prefixes.get(r["prefix"], PrefixActivations({})) for r in rows])
        if infixes:
            visible_from = torch.tensor([width - 1 if r["prefix"] in infixes else 0 for r in rows])
            batch_prefix = with_visibility(batch_prefix, visible_from)
        output = model.generate(
            ids, mask, prefix=batch_prefix, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
            do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        for row, text in zip(rows, texts):
            yield {**row, "output": text.strip()}


if __name__ == "__main__":
    main()
