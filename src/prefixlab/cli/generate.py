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
        raise ValueError(f"--input {source}: cannot read the prompts ({getattr(error, 'strerror', None) or error})") from None
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

    def __init__(self, model, prefix_dirs: dict[str, Path], prompt_format: str = "raw") -> None:
        """``model``: a model name (pretrained) or the ``BaseModelBuild`` an export records (a random-init
        base is drawn again from its seed and checked against the weights the prefix was trained on)."""
        from prefixlab.engine.export import BaseModelBuild
        from prefixlab.engine.prefixed_lm import PrefixedCausalLM
        from prefixlab.engine.prefixed_seq2seq import PrefixedSeq2SeqLM
        from prefixlab.training.base_model import load_base_lm
        from prefixlab.training.model_loading import load_config, load_tokenizer

        self.build = model if isinstance(model, BaseModelBuild) else BaseModelBuild(str(model))
        model_name = self.build.name_or_path
        # trust_remote_code=False always: the model name may come from a prefix folder, which never opts in
        config = load_config(model_name, trust_remote_code=False)  # a wrong model name fails before anything loads
        self.model_name = model_name
        self.is_encoder_decoder = bool(config.is_encoder_decoder)
        lm = load_base_lm(self.build)
        self.tokenizer = load_tokenizer(model_name, trust_remote_code=False)
        self.model = (PrefixedSeq2SeqLM if self.is_encoder_decoder else PrefixedCausalLM)(lm)
        self.prefixes, self.infixes = {}, set()
        for name, directory in prefix_dirs.items():
            self._load(name, Path(directory))
        self.encode = self._encoder_for(prompt_format)

    def _load(self, name: str, directory: Path) -> None:
        from prefixlab.engine.export import PrefixFormatError, check_prefix_fits, load_prefix
        from prefixlab.engine.peft_format import is_peft_prefix, load_peft_prefix
        from prefixlab.training.base_model import read_base_build, same_weights

        geometry = self.model.geometry
        try:
            if is_peft_prefix(directory):
                recorded = read_base_build(directory)
                if recorded is not None and not same_weights(recorded, self.build):
                    raise PrefixFormatError(f"trained on {recorded.describe()}, this generation loads {self.build.describe()}")
                self.prefixes[name] = load_peft_prefix(directory, geometry)
                return
            exported = load_prefix(directory, expected_model=self.model_name)
            if exported.base_build is not None and not same_weights(exported.base_build, self.build):
                raise PrefixFormatError(f"trained on {exported.base_build.describe()}, this generation loads "
                                        f"{self.build.describe()} (leave out --model to use the prefix's own)")
            check_prefix_fits(exported.geometry, geometry, "the prefix", self.build.describe())
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
        for start in tqdm(starts, desc="generating", unit="batch", file=sys.stderr, disable=not progress):  # with an ETA
            rows = prompts[start : start + batch_size]
            new_tokens = generate_mixed(
                self.model, [list(self.encode(r["prompt"])) for r in rows],
                [self.prefixes.get(r.get("prefix"), PrefixActivations({})) for r in rows],
                pad_token_id=tokenizer.pad_token_id, infix_rows=[r.get("prefix") in self.infixes for r in rows],
                max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False, eos_token_id=tokenizer.eos_token_id,
            )
            for row, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                yield {**row, "output": text.strip()}


def check_prefix_folder(name: str, directory: Path) -> None:
    """One line for a folder that is not a prefix, before any model loads: a missing folder, a run
    folder given instead of its ``prefix/``, a run whose export is no prefix, any other folder."""
    from prefixlab.engine.export import CONFIG_FILE
    from prefixlab.engine.peft_format import is_peft_prefix

    where = f"--prefix {name}={directory}"
    if not directory.is_dir():
        raise ValueError(f"{where}: no such folder")
    if is_peft_prefix(directory) or (directory / CONFIG_FILE).is_file():
        return
    if (directory / "prefix" / CONFIG_FILE).is_file():
        raise ValueError(f"{where} is a run folder; give its export: --prefix {name}={directory / 'prefix'}")
    if (directory / "trained").is_dir():
        raise ValueError(f"{where} is a run of a method without a prefix (its export is {directory / 'trained'}); "
                         "prefixlab-generate takes prefix exports (prefix/) and PEFT prefix-tuning adapters")
    raise ValueError(f"{where} is not an exported prefix: expected {CONFIG_FILE} (a prefixlab export) or "
                     "adapter_config.json (a PEFT prefix-tuning adapter); give a run's prefix/ folder")


def _choose_base(model: str | None, prefix_dirs: dict[str, Path]):
    """The base model to load: the first prefix's recorded build (or, for older exports, the pretrained
    model it names); with ``--model``, that model, built as a prefix records it when one names it."""
    from prefixlab.engine.export import BaseModelBuild, load_prefix
    from prefixlab.engine.peft_format import is_peft_prefix
    from prefixlab.training.base_model import read_base_build

    recorded = []
    for directory in prefix_dirs.values():
        if is_peft_prefix(directory):
            build = read_base_build(directory)
        else:
            exported = load_prefix(directory)  # the whole folder checked: one line for any bad field
            build = exported.base_build or BaseModelBuild(exported.base_model)
        if build is not None:
            recorded.append(build)
    if model is None:
        if not recorded:
            raise ValueError("give --model (the base model): no prefix names the model it was trained on")
        return recorded[0]
    return next((b for b in recorded if b.name_or_path == model), BaseModelBuild(model))


def run(args: argparse.Namespace):
    prefix_dirs = _named_prefix_dirs(args.prefix)
    for name, directory in prefix_dirs.items():  # before any model loads
        check_prefix_folder(name, directory)
    prompts = _read_prompts(args.input, next(iter(prefix_dirs), None))  # a missing input file: before any model loads
    base = _choose_base(args.model, prefix_dirs)
    prompt_format = args.task or ("chat" if args.chat else "raw")
    generator = MixedPrefixGenerator(base, prefix_dirs, prompt_format)
    yield from generator.generate(prompts, args.max_new_tokens, args.num_beams, args.batch_size, progress=len(prompts) > args.batch_size)


if __name__ == "__main__":
    main()
