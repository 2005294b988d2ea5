"""prefixlab-convert: between prefixlab's exported prefix and PEFT's prefix-tuning adapter.

    prefixlab-convert outputs/<run>/prefix --to peft --out my_peft_adapter
    prefixlab-convert my_peft_adapter --to prefixlab --out my_prefix --model embedded:smollm2-135m-instruct

Decoder-only prefixes. PEFT's files carry no model type, so converting to prefixlab needs the base
model: ``--model``, or the ``prefixlab_base_model.json`` that ``--to peft`` writes beside the adapter
(how prefixlab built the base: a random-init one is rebuilt from its seed and checked). The
adapter's geometry is checked against the model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prefixlab-convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="an exported prefix folder (prefixlab or PEFT)")
    parser.add_argument("--to", choices=("peft", "prefixlab"), required=True)
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--model", default=None, help="base model (needed for --to prefixlab)")
    args = parser.parse_args(argv)
    from prefixlab.errors import USER_ERRORS

    try:
        print(convert(Path(args.source), args.to, Path(args.out), args.model))
    except USER_ERRORS as error:
        sys.exit(f"prefixlab-convert: error: {error}")


def convert(source: Path, to: str, out: Path, model: str | None) -> Path:
    from prefixlab.engine.export import ExportedPrefix, PrefixFormatError, load_prefix, save_prefix
    from prefixlab.engine.peft_format import is_peft_prefix, load_peft_prefix, save_peft_prefix

    if to == "peft":
        if is_peft_prefix(source):
            raise PrefixFormatError(f"{source} is already a PEFT adapter")
        exported = load_prefix(source)
        if exported.metadata.get("placement") == "infix":
            raise PrefixFormatError(f"{source} is an infix: PEFT's format has no place for it")
        return save_peft_prefix(out, exported.activations, exported.geometry, exported.base_model, exported.base_build)
    from prefixlab.engine.export import BaseModelBuild
    from prefixlab.engine.prefixed_lm import PrefixedCausalLM
    from prefixlab.training.base_model import load_base_lm, read_base_build

    if not is_peft_prefix(source):
        raise PrefixFormatError(f"{source} is not a PEFT adapter (no adapter_config.json)")
    build = read_base_build(source)
    if build is None or (model is not None and model != build.name_or_path):
        if model is None:
            raise PrefixFormatError("--to prefixlab needs --model: PEFT's files do not say which model type they are for")
        build = BaseModelBuild(model)  # a pretrained model by name
    # converting never runs model code (load_base_lm passes trust_remote_code=False)
    geometry = PrefixedCausalLM(load_base_lm(build)).geometry
    activations = load_peft_prefix(source, geometry, expected_model=None)
    length = activations.sites["decoder_self"].length
    return save_prefix(out, ExportedPrefix(activations, geometry, build.name_or_path, length, "prefix",
                                           {"converted_from": str(source)}, base_build=build))


if __name__ == "__main__":
    main()
