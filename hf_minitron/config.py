"""`PruningConfig`: what to prune and how to score it, saved as `pruning_config.json`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from hf_minitron.io import atomic_write_text

logger = logging.getLogger(__name__)

CONFIG_NAME = "pruning_config.json"

DEPTH_METRICS = ("block_importance", "perplexity", "contiguous")
BATCH_AGGREGATIONS = ("l2", "mean", "var")
SEQUENCE_AGGREGATIONS = ("mean", "l2")
IMPORTANCE_CRITERIA = ("activation", "taylor", "magnitude")
NORM_RESCALE_FACTORS = ("width", "data")
EXPERT_IMPORTANCE = ("reap", "frequency", "gate")
_SIZE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "num_hidden_layers",
    "num_experts",
    "num_local_experts",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "intermediate_size_mlp",
    "mamba_num_heads",
    "mamba_n_heads",
    "shared_intermediate_size",
    "linear_num_value_heads",
    "linear_num_key_heads",
    "moe_shared_expert_intermediate_size",
)


def _fail(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{name}={value!r} is invalid: allowed {allowed}")


@dataclass
class PruningConfig:
    """
    Targets and settings of a Minitron pruning run. Size targets are named like the transformers config keys;
    `None` keeps that size as it is.

    Args:
        hidden_size (`int`, *optional*): New embedding (residual stream) width.
        intermediate_size (`int`, *optional*): New MLP width, the same in every layer.
        num_attention_heads (`int`, *optional*): New number of query heads; a multiple of the KV heads.
        num_key_value_heads (`int`, *optional*): New number of KV groups; whole groups are dropped with their
            query heads. For GQA models it defaults to the current count; for MHA models to `num_attention_heads`.
        mamba_num_heads (`int`, *optional*): New number of Mamba-2 SSM heads of a hybrid model (Nemotron-H), the
            same in every Mamba layer; a multiple of the model's `n_groups`, which is kept.
        mamba_n_heads (`int`, *optional*): The same for the families that call it `mamba_n_heads` (Bamba, Granite
            4, Falcon-H1); Bamba and Granite 4 tie it to the hidden size (`mamba_n_heads * mamba_d_head ==
            mamba_expand * hidden_size`), Falcon-H1 rewrites `mamba_d_ssm` with it.
        shared_intermediate_size (`int`, *optional*): New width of Granite 4's shared MLP, in every layer.
        linear_num_value_heads (`int`, *optional*): New number of Gated DeltaNet value heads (Qwen3-Next, Qwen 3.5,
            OLMo Hybrid), the same in every linear-attention layer; a multiple of `linear_num_key_heads`.
        linear_num_key_heads (`int`, *optional*): New number of Gated DeltaNet key heads: whole key heads are
            dropped with their value heads (the value heads per key head are kept unless told otherwise).
        moe_shared_expert_intermediate_size (`int`, *optional*): New width of the shared expert of Nemotron-H's MoE
            blocks (Nemotron 3 Nano).
        num_hidden_layers (`int`, *optional*): New depth; the layers to drop are chosen by `depth_metric`.
        num_experts, num_local_experts (`int`, *optional*): New number of experts in every MoE layer (the family's
            key: `num_experts` for Qwen-MoE, OLMoE and ERNIE-4.5, `num_local_experts` for Mixtral, gpt-oss, Llama 4,
            Phi-MoE, Granite-MoE, GLM-4-MoE, Granite 4 and Nemotron-H, whose configs map these names to their own;
            a multiple of `n_group` for Nemotron-H); at least `num_experts_per_tok`.
        moe_intermediate_size (`int`, *optional*): New width of every expert (Qwen-MoE, GLM-4-MoE, ERNIE-4.5,
            Nemotron-H); Mixtral, OLMoE, gpt-oss, Llama 4, Phi-MoE, Granite-MoE and Granite 4 size their experts with
            `intermediate_size`.
        shared_expert_intermediate_size (`int`, *optional*): New width of the shared expert (Qwen2-MoE).
        intermediate_size_mlp (`int`, *optional*): New width of the dense layers' MLP (Llama 4, whose experts and
            shared expert share `intermediate_size`).
        layers_to_drop (`list[int]`, *optional*): Explicit layer indices to drop (alternative to
            `num_hidden_layers`).
        depth_metric (`str`, defaults to `"block_importance"`): `"block_importance"` (1 - cosine of layer input
            and output, measured in the same pass as the width statistics), `"perplexity"` (LM loss with the layer
            skipped) or `"contiguous"` (drop the contiguous block whose removal raises the loss least).
        batch_aggregation (`str`, defaults to `"l2"`): How per-sample statistics are combined: `"l2"`, `"mean"`,
            `"var"`.
        sequence_aggregation (`str`, defaults to `"mean"`): How token statistics are combined within a sample:
            `"mean"` of absolute values or `"l2"`.
        rescale_norms (`bool`, *optional*): Multiply the gain of every norm whose statistic spans a pruned dimension
            (RMSNorm or LayerNorm over the hidden size, OLMo 2's q/k norms over all heads) by rms_new / rms_old, so
            the kept entries keep their values. `None` takes the family's default from its spec: on for most
            (Qwen2.5-Coder 1.5B at hidden 1536 -> 1024: held-out loss right after pruning 3.87 with it vs 6.18
            without), off for Gemma (Gemma 3 270M to half its parameters: 14.50 off, 16.31 on).
        norm_rescale_factor (`str`, defaults to `"width"`): How `rescale_norms` estimates rms_new / rms_old:
            `"width"`, `sqrt(old / new width)` (exact when the cut entries carried nothing), or `"data"`,
            `sqrt((E_kept / kept) / (E_all / old width))` from each norm's per-channel input mean square on the
            calibration tokens (`ImportanceScores.norm_inputs`, recorded by the activation and Taylor passes, and
            by magnitude when given data). `"width"` stays the default because it keeps the outputs of the linear
            layers that read a pre-norm: on Qwen2.5-Coder-1.5B pruned to 0.5B with activation importance, held-out
            loss right after pruning 8.57 width vs 8.86 data (9.78 off); `"data"` wins where norms feed the
            residual stream (Gemma 3 270M at half its parameters, activation: 14.33 data vs 16.31 width).
        head_carry_over (`bool`, defaults to `False`): Minitron's P1 trick: kept heads absorb pruned ones
            (`head_i + (head_i - head_{2K-i+1})`, applied to the head's output projection columns).
        target_params (`int`, *optional*): Total parameter budget; the shape is resolved by
            `hf_minitron.search.resolve_target_params` (for a mixture-of-experts model: the experts per layer).
        target_active_params (`int`, *optional*): Budget of parameters touched per token
            (`hf_minitron.counting.count_active_parameters`); for a mixture-of-experts model it sets the expert
            width, for a dense model it is the same as `target_params`.
        importance (`str`, defaults to `"activation"`): Width criterion: `"activation"` (Minitron's forward-only
            statistics, no gradients: the lowest loss right after pruning on real pretrained Qwen2.5-Coder-1.5B and
            SmolLM2-135M, at a quarter of Taylor's time), `"taylor"` (|weight x gradient| of the LM loss, one
            backward per batch; marginally ahead after distillation on the 2.4M quickstart teacher) or
            `"magnitude"` (weight norms, no data). Layers are ranked by `depth_metric` whatever the criterion.
        width_multiple (`int`, defaults to 64): Hidden and MLP sizes chosen for a budget are multiples of it.
        expert_importance (`str`, defaults to `"reap"`): How experts are ranked (whatever the width criterion, when
            calibration batches are given; magnitude without batches uses weight norms): `"reap"`
            (REAP's router-weighted saliency: mean over the tokens routed to the expert of gate weight x L2 norm of
            its output), `"frequency"` (share of tokens routed to it) or `"gate"` (its mean gate weight over all
            tokens).
    """

    hidden_size: int | None = field(default=None, metadata={"help": "New hidden size (None keeps it)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "New MLP width (None keeps it)."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "New query head count."})
    num_key_value_heads: int | None = field(default=None, metadata={"help": "New KV group count."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "New number of layers."})
    num_experts: int | None = field(
        default=None, metadata={"help": "New experts per MoE layer (Qwen-MoE, OLMoE)."}
    )
    num_local_experts: int | None = field(
        default=None, metadata={"help": "New experts per MoE layer (Mixtral, gpt-oss)."}
    )
    moe_intermediate_size: int | None = field(default=None, metadata={"help": "New width of every expert."})
    shared_expert_intermediate_size: int | None = field(
        default=None, metadata={"help": "New width of the shared expert."}
    )
    intermediate_size_mlp: int | None = field(
        default=None, metadata={"help": "New width of the dense layers' MLP (Llama 4)."}
    )
    mamba_num_heads: int | None = field(default=None, metadata={"help": "New Mamba-2 head count (hybrids)."})
    mamba_n_heads: int | None = field(default=None, metadata={"help": "New Mamba-2 head count (Bamba)."})
    shared_intermediate_size: int | None = field(default=None, metadata={"help": "New shared MLP width."})
    linear_num_value_heads: int | None = field(
        default=None, metadata={"help": "New Gated DeltaNet value head count (linear attention)."}
    )
    linear_num_key_heads: int | None = field(
        default=None, metadata={"help": "New Gated DeltaNet key head count (linear attention)."}
    )
    moe_shared_expert_intermediate_size: int | None = field(
        default=None, metadata={"help": "New width of Nemotron-H's shared expert."}
    )
    layers_to_drop: list[int] | None = field(
        default=None, metadata={"help": "Explicit layer indices to drop."}
    )
    depth_metric: str = field(default="block_importance", metadata={"help": f"One of {DEPTH_METRICS}."})
    batch_aggregation: str = field(default="l2", metadata={"help": f"One of {BATCH_AGGREGATIONS}."})
    sequence_aggregation: str = field(default="mean", metadata={"help": f"One of {SEQUENCE_AGGREGATIONS}."})
    head_carry_over: bool = field(default=False, metadata={"help": "Kept heads absorb pruned ones (P1)."})
    rescale_norms: bool | None = field(
        default=None,
        metadata={
            "help": "Rescale the gain of norms whose statistic spans a pruned dimension by rms_new / rms_old "
            "(None: the family's default)."
        },
    )
    norm_rescale_factor: str = field(
        default="width",
        metadata={"help": f"How rescale_norms estimates rms_new / rms_old: one of {NORM_RESCALE_FACTORS}."},
    )
    target_params: int | None = field(default=None, metadata={"help": "Total parameter budget."})
    target_active_params: int | None = field(
        default=None,
        metadata={"help": "Budget of parameters touched per token (MoE: sets the expert width)."},
    )
    importance: str = field(
        default="activation",
        metadata={
            "help": f"Width importance criterion, one of {IMPORTANCE_CRITERIA} (activation: forward only)."
        },
    )
    width_multiple: int = field(default=64, metadata={"help": "Budget-chosen widths are multiples of this."})
    expert_importance: str = field(
        default="reap", metadata={"help": f"How experts are ranked, one of {EXPERT_IMPORTANCE}."}
    )

    def __post_init__(self):
        if self.layers_to_drop is not None and not isinstance(self.layers_to_drop, (str, bytes)):
            self.layers_to_drop = list(self.layers_to_drop)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check the settings on their own (types, choices, positivity); raise `ValueError` naming the field."""
        for name in (*_SIZE_FIELDS, "target_params", "target_active_params"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise _fail(name, value, "a positive integer or None")
        if (
            isinstance(self.width_multiple, bool)
            or not isinstance(self.width_multiple, int)
            or self.width_multiple < 1
        ):
            raise _fail("width_multiple", self.width_multiple, "a positive integer")
        for name, choices in (
            ("depth_metric", DEPTH_METRICS),
            ("batch_aggregation", BATCH_AGGREGATIONS),
            ("sequence_aggregation", SEQUENCE_AGGREGATIONS),
            ("importance", IMPORTANCE_CRITERIA),
            ("expert_importance", EXPERT_IMPORTANCE),
            ("norm_rescale_factor", NORM_RESCALE_FACTORS),
        ):
            if getattr(self, name) not in choices:
                raise _fail(name, getattr(self, name), f"one of {list(choices)}")
        if not isinstance(self.head_carry_over, bool):
            raise _fail("head_carry_over", self.head_carry_over, "True or False")
        if self.rescale_norms is not None and not isinstance(self.rescale_norms, bool):
            raise _fail("rescale_norms", self.rescale_norms, "True, False or None (the family's default)")
        drop = self.layers_to_drop
        if drop is not None:
            if not isinstance(drop, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in drop):
                raise _fail("layers_to_drop", drop, "a list of layer indices")
            if any(i < 0 for i in drop):
                raise _fail("layers_to_drop", drop, "non-negative layer indices")
            if len(set(drop)) != len(drop):
                raise _fail("layers_to_drop", drop, "indices without duplicates")
        if self.num_attention_heads and self.num_key_value_heads:
            if self.num_attention_heads % self.num_key_value_heads:
                raise _fail(
                    "num_attention_heads",
                    self.num_attention_heads,
                    f"a multiple of num_key_value_heads={self.num_key_value_heads}",
                )

    def target_sizes(self, model_config) -> dict[str, int]:
        """Every prunable width of the model with `model_config` after pruning (`None` fields keep the size; a
        GQA model keeps its query heads per KV group unless told otherwise)."""
        from hf_minitron.architectures import get_spec
        from hf_minitron.architectures.dimensions import resolve

        spec = get_spec(model_config)
        current = spec.shape(model_config)
        requested = {k: getattr(self, k, None) for k in spec.size_keys}
        sizes: dict[str, int] = {}
        for group in spec.groups:
            sizes.update(resolve(group, requested, current))
        return sizes

    def pruned_dimensions(self, model_config) -> set[str]:
        """Names of the dimension groups (and `"layers"`) this config shrinks; all of them with a budget."""
        from hf_minitron.architectures import get_spec

        spec = get_spec(model_config)
        every = {g.name for g in spec.groups} | {"layers"}
        if self.target_params is not None or self.target_active_params is not None:
            return every
        current, sizes = spec.shape(model_config), self.target_sizes(model_config)
        names = {g.name for g in spec.groups if any(sizes[k] != current[k] for k in g.config_keys)}
        if (
            self.layers_to_drop is None
            and self.num_hidden_layers is not None
            and self.num_hidden_layers < current["num_hidden_layers"]
        ):
            names.add("layers")
        return names

    def validate_for(self, model_config) -> None:
        """Check the targets against a model's config; raise `ValueError` naming field, value and allowed range."""
        from hf_minitron.architectures import get_spec
        from hf_minitron.architectures.dimensions import validate
        from hf_minitron.architectures.spec import text_config

        self.validate()
        spec = get_spec(model_config)
        current = spec.shape(model_config)
        for name in (*spec.size_keys, *(f for f in _SIZE_FIELDS if f not in spec.size_keys)):
            value = getattr(self, name, None)
            if value is not None and (name not in current or name not in spec.size_keys):
                raise _fail(name, value, f"None ({type(model_config).__name__} has no prunable {name})")
        layers = self.num_hidden_layers
        if layers is not None and layers > current["num_hidden_layers"]:
            raise _fail(
                "num_hidden_layers", layers, f"1..{current['num_hidden_layers']} (the model's current depth)"
            )
        sizes = self.target_sizes(model_config)
        for group in spec.groups:
            validate(group, sizes, current)
        model_config = text_config(model_config)
        n_layers = model_config.num_hidden_layers
        if self.layers_to_drop is not None:
            bad = [i for i in self.layers_to_drop if i >= n_layers]
            if bad:
                raise _fail("layers_to_drop", self.layers_to_drop, f"indices in 0..{n_layers - 1}")
            if len(self.layers_to_drop) >= n_layers:
                raise _fail(
                    "layers_to_drop", self.layers_to_drop, f"at most {n_layers - 1} of {n_layers} layers"
                )
            kept = n_layers - len(self.layers_to_drop)
            if self.num_hidden_layers is not None and self.num_hidden_layers != kept:
                raise _fail(
                    "num_hidden_layers",
                    self.num_hidden_layers,
                    f"None or {kept} (= {n_layers} layers minus the {len(self.layers_to_drop)} in layers_to_drop)",
                )

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        """Sorted, indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningConfig:
        """Build from a dict; keys unknown to this version are ignored with one warning naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("PruningConfig: ignoring unknown keys %s (written by a newer version?)", unknown)
        return cls(**{k: v for k, v in data.items() if k in known})

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write `pruning_config.json` into `save_directory` (created if needed); return the file path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        atomic_write_text(path, self.to_json_string())
        return path

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **hub_kwargs) -> PruningConfig:
        """Load from a folder, a JSON file, or a Hub repo id (`hub_kwargs` go to `hf_hub_download`)."""
        path = os.fspath(path_or_repo_id)
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        elif not os.path.isfile(path):
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(repo_id=path, filename=CONFIG_NAME, **hub_kwargs)
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str = "Upload pruning_config.json",
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
    ):
        """Upload `pruning_config.json` to a Hub repo (created if missing); return the commit info."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_file(
            path_or_fileobj=self.to_json_string().encode(),
            path_in_repo=CONFIG_NAME,
            repo_id=repo_id,
            commit_message=commit_message,
            revision=revision,
        )
