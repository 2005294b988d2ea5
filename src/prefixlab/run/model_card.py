"""The model card: ``README.md`` in a run's export folder (``prefix/`` or ``trained/``).

Written once the test metrics are known (``cli/train.py``; per job in packed sweeps,
``sweeps/packed_eval.py``), so the folder a user copies away says by itself what it is: the base
model and how it was built (random init, config overrides, seed), the task, the method and its
settings, parameter counts, the run's validation and test metrics, the command that made it, and
how to load it with prefixlab (``prefixlab-generate`` / ``prefixlab-eval``) and with PEFT.
Plain text from plain data: no Hydra, no Lightning (the command comes from the job's
``.hydra/overrides.yaml``, or from the caller).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Sequence

CARD_FILE = "README.md"
PREFIX_EXPORT = "prefix"  # an export format (a prefix's activations), and the folder it goes to
EXPORT_FOLDERS = (PREFIX_EXPORT, "trained")
# overrides of the training command that also decide what an evaluation scores (its split, its prompts, its decoding)
_EVAL_KEYS = ("task", "generation", "experiment", "scale")
_COUNT_KEYS = ("trainable_params", "exported_params", "lm_params", "total_params", "head_params")


def recorded_command(run_dir: Path) -> list[str] | None:
    """The overrides the job was started with: Hydra's for this job (a single run, or any job of a
    sweep or pack: Hydra writes ``.hydra/overrides.yaml`` into every job folder before it runs)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        try:
            return [str(o) for o in OmegaConf.load(path)]
        except Exception:  # a damaged file: the card says the command is unknown rather than fail the run
            return None
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and Path(HydraConfig.get().runtime.output_dir).resolve() == Path(run_dir).resolve():
            return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:
        pass
    return None


def _command_line(program: str, arguments: Sequence[str]) -> str:
    return " ".join([program, *(shlex.quote(a) for a in arguments)])


def eval_arguments(export: Path, task: str, command: Sequence[str] | None) -> list[str]:
    """``prefixlab-eval`` overrides that score ``export`` as the run scored it: the export, the
    task, and the run's own task / generation / experiment overrides (its split sizes, prompts,
    decoding). The base model comes from the export itself."""
    kept = [o for o in (command or []) if o.lstrip("+~").split("=", 1)[0].split(".", 1)[0] in _EVAL_KEYS
            and not o.lstrip("+~").startswith("task=")]
    return [f"eval.source={export}", f"task={task}", *kept]


def _table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {_format(value)} |" for key, value in rows]
    return lines


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"`{value}`" if value not in (None, "") else "-"


def render_model_card(*, export: Path, run_name: str, task: str, method: dict, method_summary: str,
                      export_format: str, target_only: bool, base_build, metrics: dict,
                      command: Sequence[str] | None, decoder_only: bool, encoder: bool) -> str:
    """The card's Markdown. ``base_build``: the ``BaseModelBuild`` of the run's frozen model;
    ``export_format``: the method's (prefix | weights | peft | bottleneck | head);
    ``target_only``: an infix export (only the target sees it); ``command``: the training overrides, None if unknown."""
    export = Path(export).resolve()
    run_dir = export.parent
    is_prefix = export_format == PREFIX_EXPORT
    lines = [f"# {method['name']} on {task}: {run_name}", "",
             f"An export of a prefixlab run (`{run_dir}`): "
             + ("the prefix's computed key/value activations (no MLP), `prefix.safetensors` + `prefix_config.json`."
                if is_prefix and not encoder else
                "a task head (`head.safetensors`, `head_config.json`)" + (" and its prefix." if is_prefix else ".")
                if encoder else f"the trained tensors ({export_format})."), ""]

    lines += ["## Base model", "", f"- `{base_build.name_or_path}`"
              + (", **random weights** (`model.random_init=true`): a debugging model, its numbers mean nothing"
                 if base_build.random_init else ", pretrained weights")]
    if base_build.random_init:
        lines.append(f"- drawn with torch seed {base_build.seed}; weights fingerprint (SHA-256) `{base_build.weights_sha256}`; "
                     "prefixlab rebuilds it from the seed and refuses if the fingerprint differs")
    if base_build.config_overrides:
        lines.append("- config overrides: " + ", ".join(f"`{k}={v}`" for k, v in sorted(base_build.config_overrides.items())))
    lines += [f"- dtype `{base_build.dtype}`, attention `{base_build.attn_implementation}`", ""]

    lines += ["## Task and method", "", f"- task: `{task}`", f"- method: `{method['name']}`: {method_summary}"
              + (" (an infix: only the target sees it)" if target_only else ""), ""]
    settings = [(key, value) for key, value in sorted(method.items()) if key != "name"]
    if settings:
        lines += _table(settings, ("method setting", "value")) + [""]

    counts = [(key, metrics[key]) for key in _COUNT_KEYS if key in metrics]
    for key in ("trainable_percent_of_lm", "exported_percent_of_lm"):
        if key in metrics:
            counts.append((key, float(metrics[key])))
    if counts:
        lines += ["## Parameters", ""] + _table(counts, ("count", "value")) + [""]

    scores = [(key, value) for key, value in sorted(metrics.items()) if key.startswith(("val/", "test/"))]
    lines += ["## Metrics", "", f"From the run's `metrics.json` (status `{metrics.get('status', '?')}`, "
              f"{metrics.get('steps', '?')} steps); validation selects, test reports.", ""]
    lines += (_table(scores, ("metric", "value")) if scores else ["(no validation or test metrics recorded)"]) + [""]

    lines += ["## How it was made", "", "```bash",
              _command_line("prefixlab-train", command) if command is not None else "# the command was not recorded",
              "```", ""]

    lines += ["## Use it with prefixlab", ""]
    if is_prefix and not encoder:
        lines += ["```bash", _command_line("prefixlab-generate", ["--prefix", str(export), "--task", task, "--input", "prompts.txt"]),
                  "```", "One prompt per line (or JSON lines with a `prompt` field); one JSON line per prompt comes out. "
                  "The base model is rebuilt from this folder's `prefix_config.json`.", ""]
    if encoder or (is_prefix and not target_only):
        lines += ["Score it again on the run's test split:", "", "```bash",
                  _command_line("prefixlab-eval", eval_arguments(export, task, command)), "```", ""]
    else:
        lines += ["Score it again from the run's checkpoint (its trainable state with its method):", "", "```bash",
                  _command_line("prefixlab-eval", [f"eval.source={run_dir / 'checkpoints' / 'last.ckpt'}",
                                                   *eval_arguments(export, task, command)[1:]]), "```", ""]

    lines += ["## Use it with PEFT", ""]
    load_base = (["from prefixlab.training.base_model import load_base_lm, read_base_build",
                  f"base = load_base_lm(read_base_build({str(export)!r}))  # random weights: drawn again from the seed, checked"]
                 if base_build.random_init else
                 ["from transformers import AutoModelForCausalLM",
                  "from prefixlab.training.model_loading import resolve  # embedded:<name> -> its local folder",
                  f"base = AutoModelForCausalLM.from_pretrained(resolve({base_build.name_or_path!r}))"]
                 if base_build.name_or_path.startswith("embedded:") else
                 ["from transformers import AutoModelForCausalLM",
                  f"base = AutoModelForCausalLM.from_pretrained({base_build.name_or_path!r})"])
    if export_format == "peft":
        lines += ["This folder is a PEFT adapter:", "", "```python", "from peft import PeftModel", *load_base,
                  f"model = PeftModel.from_pretrained(base, {str(export)!r})", "```", ""]
    elif is_prefix and decoder_only and not encoder and not target_only:
        peft_dir = export.parent / f"{export.name}-peft"
        lines += ["Convert it to a PEFT prefix-tuning adapter first:", "", "```bash",
                  _command_line("prefixlab-convert", [str(export), "--to", "peft", "--out", str(peft_dir)]), "```", "",
                  "```python", "from peft import PeftModel", *load_base,
                  f"model = PeftModel.from_pretrained(base, {str(peft_dir)!r})", "```", ""]
    else:
        lines += ["PEFT has no format for this export" + (" (an infix)" if target_only else
                                                         " (an encoder head)" if encoder else
                                                         " (an encoder-decoder prefix)" if is_prefix else
                                                         f" ({export_format})") + ".", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_model_card(run_dir: Path, module, resolved: dict, metrics: dict, command: Sequence[str] | None = None) -> Path | None:
    """``README.md`` into the run's export folder (None when the run exported nothing). ``module``:
    the run's LightningModule (its ``base_build``, ``is_prefix_method``, ``prefixed``); ``resolved``:
    the run's resolved config; ``metrics``: what ``metrics.json`` holds; ``command``: the training
    overrides (default: the job's recorded ones)."""
    from prefixlab.methods import get_method
    from prefixlab.run.artifacts import atomic_write

    run_dir = Path(run_dir)
    export = next((run_dir / name for name in EXPORT_FOLDERS if (run_dir / name).is_dir()), None)
    if export is None or getattr(module, "base_build", None) is None:
        return None
    spec = get_method(resolved["method"]["name"])
    from prefixlab.training.encoder_module import EncoderTaskModule

    encoder = isinstance(module, EncoderTaskModule)  # its export is a task head (+ prefix)
    sites = set(module.prefixed.geometry.sites) if getattr(module, "prefixed", None) is not None else set()
    text = render_model_card(
        export=export, run_name=str(resolved.get("run_name") or metrics.get("run_name") or run_dir.name),
        task=resolved["task"]["name"], method=dict(resolved["method"]), method_summary=spec.summary,
        export_format=PREFIX_EXPORT if encoder and module.is_prefix_method else "head" if encoder else spec.export_format,
        target_only=spec.target_only, base_build=module.base_build, metrics=metrics,
        command=recorded_command(run_dir) if command is None else command,
        decoder_only=sites == {"decoder_self"}, encoder=encoder,
    )
    return atomic_write(export / CARD_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
