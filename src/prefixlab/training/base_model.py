"""The base model of an export: recorded when a run builds it, rebuilt when the export is used.

``record_build`` runs where a module loads its frozen model: for a random-init model it notes
torch's seed (``torch.initial_seed()``: the run's ``seed``, set by ``seed_everything`` before the
model is built) and a fingerprint of the weights as drawn. ``load_base_lm`` rebuilds: a pretrained
model by name; a random-init one by seeding torch with that seed and drawing again, then checking
the fingerprint, so a rebuilt model is the trained-on model or an error, never a silent stand-in.
Random weights are not saved: a prefix export stays a few kilobytes even for a full-size random model.
"""

from __future__ import annotations

import torch

from prefixlab.engine.export import BaseModelBuild, PrefixFormatError, weights_sha256


def record_build(model: dict, backbone: torch.nn.Module, seed: int | None = None) -> BaseModelBuild:
    """What ``model`` (a run's model section) built into ``backbone``, called right after building it
    (before a method injects or unfreezes anything). ``seed``: the seed torch was set to before the
    build (default: ``torch.initial_seed()``)."""
    random_init = bool(model.get("random_init"))
    return BaseModelBuild(
        name_or_path=model["name_or_path"],
        random_init=random_init,
        config_overrides=dict(model.get("config_overrides") or {}),
        dtype=model.get("dtype", "float32"),
        attn_implementation=model.get("attn_implementation", "sdpa"),
        seed=(torch.initial_seed() if seed is None else int(seed)) if random_init else None,
        weights_sha256=weights_sha256(backbone) if random_init else None,
    )


def model_section(build: BaseModelBuild) -> dict:
    """The ``model`` config section that builds ``build`` (an export never opts in to remote code)."""
    return {"name_or_path": build.name_or_path, "dtype": build.dtype, "attn_implementation": build.attn_implementation,
            "random_init": build.random_init, "config_overrides": dict(build.config_overrides),
            "gradient_checkpointing": False, "trust_remote_code": False}


def seeded_like(build: BaseModelBuild, make):
    """``make()`` with torch seeded as at the recorded build (a random-init base only), leaving the
    caller's random state as it was. The caller checks the result with ``check_rebuilt``."""
    if not build.random_init:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(build.seed)
        return make()


def check_rebuilt(build: BaseModelBuild, rebuilt: BaseModelBuild) -> None:
    """``rebuilt`` (``record_build`` of the model just built from ``build``) has the recorded weights, or one error line."""
    if build.random_init and rebuilt.weights_sha256 != build.weights_sha256:
        raise PrefixFormatError(
            f"the random base model ({build.describe()}) rebuilt here differs from the one the export was trained on "
            "(weights fingerprint mismatch: this torch/transformers draws other random weights from that seed); "
            "a prefix is meaningless on other weights: retrain it here")


def rebuild_under_seed(build: BaseModelBuild, make):
    """``make()`` -> a model (or a tuple whose first item is the model), seeded and checked."""
    built = seeded_like(build, make)
    model = built if isinstance(built, torch.nn.Module) else built[0]
    check_rebuilt(build, record_build(model_section(build), model, seed=build.seed))
    return built


def load_base_lm(build: BaseModelBuild):
    """The frozen LM ``build`` describes, in eval mode (PrefixFormatError if a random one cannot be reproduced)."""
    from prefixlab.training.model_loading import load_lm

    def make():
        return load_lm(build.name_or_path, dtype=build.dtype, attn_implementation=build.attn_implementation,
                       random_init=build.random_init, config_overrides=build.config_overrides, trust_remote_code=False)

    return rebuild_under_seed(build, make).requires_grad_(False).eval()


BUILD_FILE = "base_model.json"  # next to the weights of a non-prefix export (trained/: LoRA, adapters, fine-tuning)


def write_base_build(directory, build: BaseModelBuild):
    import json
    from pathlib import Path

    path = Path(directory) / BUILD_FILE
    path.write_text(json.dumps(build.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_base_build(directory) -> BaseModelBuild | None:
    """The build an export records: ``prefix_config.json``'s, ``head_config.json``'s or ``base_model.json``'s;
    None when it records none (an export of an older prefixlab, or a PEFT adapter from elsewhere)."""
    import json
    from pathlib import Path

    from prefixlab.engine.export import BUILD_KEY, CONFIG_FILE
    from prefixlab.engine.peft_format import PREFIXLAB_BUILD_FILE

    directory = Path(directory)
    for name, nested in ((CONFIG_FILE, True), ("head_config.json", True), (BUILD_FILE, False), (PREFIXLAB_BUILD_FILE, False)):
        path = directory / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PrefixFormatError(f"{path} cannot be read as JSON ({error})") from error
        if nested:
            if not isinstance(data, dict) or BUILD_KEY not in data:
                continue
            data = data[BUILD_KEY]
        return BaseModelBuild.from_dict(data, str(path))
    return None


def same_weights(a: BaseModelBuild, b: BaseModelBuild) -> bool:
    """Do two builds give the same weights? (dtype and attention kernel change numerics, not the model)"""
    def key(build: BaseModelBuild):
        return (build.name_or_path, build.random_init, dict(build.config_overrides), build.seed, build.weights_sha256)

    return key(a) == key(b)
