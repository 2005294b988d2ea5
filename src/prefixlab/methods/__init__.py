"""The paper's methods and baselines as switches on one pipeline (``method.name``), each a
``MethodSpec`` in the registry (``registry.py``), declared by its family's module.

| name           | what trains                                        | what is exported                |
|----------------|----------------------------------------------------|---------------------------------|
| prefix         | MLP reparameterization of the prefix (Li & Liang)  | prefix activations (no MLP)     |
| prefix_flat    | the prefix activations themselves                  | prefix activations              |
| infix          | as prefix, but only the target sees it (INFIX-k)   | activations + placement         |
| embedding      | k input embeddings (EMB-k, prompt tuning)          | their activations               |
| finetune       | every LM weight                                    | the trained weights             |
| finetune_topk  | the top k layers and the final norm (FT-top k)     | the trained weights             |
| lora, ia3      | PEFT's LoRA / (IA)^3 adapters, injected in place   | PEFT adapter folder             |
| adapter        | bottleneck adapters after each FFN (Houlsby/Lin)   | adapter weights + JSON          |
| head           | encoders only: the task head, no prefix (baseline) | the head                        |

On an encoder (BERT family) prefix and prefix_flat train a P-tuning v2 prefix plus the task
head (``encoder_module.py``); ``head`` trains the head alone.

| module               | registers                             |
|----------------------|---------------------------------------|
| ``prefix.py``        | prefix, prefix_flat, infix, embedding |
| ``finetune.py``      | finetune, finetune_topk               |
| ``peft_adapters.py`` | lora, ia3                             |
| ``bottleneck.py``    | adapter (every size)                  |
| ``head.py``          | head                                  |

Each family's module also declares the schema of its ``method.*`` keys (``PrefixOptions``,
``TopLayersOptions``, ``LoRAOptions``, ``IA3Options``, ``AdapterOptions``; ``MethodOptions`` for
finetune and head) and names it in ``MethodSpec(options=...)``: a new method is its module and its YAML.

Importing this package registers them all, in this order (``method_names()``). Code outside
this package asks the spec (``get_method(name).is_prefix``, ``.packable``, ...), never compares
names. Plain torch and PEFT; the LightningModules call ``unfreeze_for`` / ``build_prefix_encoder``.
"""

from __future__ import annotations

from prefixlab.methods.registry import (
    DECODER, ENCODER, ENCODER_DECODER, GENERATIVE, MODEL_KINDS, Check, MethodNotSupportedError, MethodOptions, MethodSpec,
    UnknownMethodError, build_prefix_encoder, check_method_fits_model, checkpoint_keys, get_method, is_injected_parameter,
    method_names, option_schemas, register_method, unfreeze_for, unregister_method,
)

# Registration happens on import, in this order (the order of method_names()).
from prefixlab.methods import prefix, finetune, peft_adapters, bottleneck, head  # noqa: E402,F401  isort: skip
from prefixlab.methods.prefix import sites_for  # noqa: E402
from prefixlab.methods.peft_adapters import inject_peft_adapter, peft_config  # noqa: E402

__all__ = [
    "DECODER", "ENCODER", "ENCODER_DECODER", "GENERATIVE", "MODEL_KINDS", "Check", "MethodNotSupportedError",
    "MethodOptions", "MethodSpec", "UnknownMethodError", "build_prefix_encoder", "check_method_fits_model", "checkpoint_keys", "get_method",
    "inject_peft_adapter", "is_injected_parameter", "method_names", "option_schemas", "peft_config", "register_method", "sites_for",
    "unfreeze_for", "unregister_method",
]
