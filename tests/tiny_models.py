"""Tiny randomly initialized causal LMs, one per supported architecture, built offline from configs."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

ZERO_NEURONS = torch.arange(0, 128, 4)  # 32 of 128 MLP neurons in every layer
ZERO_GROUPS = (1, 3)  # KV groups (query heads 2, 3, 6, 7)
ZERO_LAYER = 2

# Shared shape: 4 layers, hidden 64, MLP 128, 8 query heads in 4 KV groups (GQA), head_dim 8.
BASE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=8,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

# One line per architecture: what that family needs beyond BASE.
ARCH_OVERRIDES: dict[str, dict] = {
    "llama": dict(tie_word_embeddings=False),
    "mistral": dict(sliding_window=None, tie_word_embeddings=False),
    "qwen2": dict(tie_word_embeddings=True),
    "qwen3": dict(tie_word_embeddings=True),
    "gemma": dict(),
    "gemma2": dict(sliding_window=16),
    "gemma3_text": dict(sliding_window=16, sliding_window_pattern=2),
    "nemotron": dict(tie_word_embeddings=False, partial_rotary_factor=0.5),
    "granite": dict(
        embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.2, logits_scaling=4.0
    ),
    "smollm3": dict(no_rope_layer_interval=2),
    # q/k norms span all heads: pruning dead heads is exact up to the norm's epsilon, made negligible here
    "olmo2": dict(rms_norm_eps=1e-12),
    "olmo3": dict(sliding_window=16, rms_norm_eps=1e-12),
    "phi3": dict(pad_token_id=0),
    "phi": dict(partial_rotary_factor=0.5),
    "glm4": dict(),
    "exaone4": dict(sliding_window=16),
    "seed_oss": dict(attention_bias=True),
    "apertus": dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    "hunyuan_v1_dense": dict(),
    "ernie4_5": dict(),
    "cohere": dict(logit_scale=0.5),
    "cohere2": dict(sliding_window=16, logit_scale=0.5),
    "starcoder2": dict(),
    "stablelm": dict(),
    "helium": dict(),
    "ministral3": dict(tie_word_embeddings=False),
    "arcee": dict(),
    "gemma3": dict(vision=dict(image_size=28, patch_size=14), mm_tokens_per_image=4),
    "mistral3": dict(vision=dict(image_size=28, patch_size=14, head_dim=16), text_model_type="ministral3"),
}

# Hybrid families (layers of different kinds from a pattern key): the dense matrix does not apply, see test_hybrid.py.
HYBRID_PATTERN = ["linear_attention", "full_attention", "mlp", "linear_attention", "moe", "full_attention"]
HYBRID_OVERRIDES: dict[str, dict] = {
    # 12 Mamba heads in 2 groups (not 8: distinct from the attention heads)
    "nemotron_h": dict(
        num_hidden_layers=len(HYBRID_PATTERN),
        layers_block_type=HYBRID_PATTERN,
        mamba_num_heads=12,
        mamba_head_dim=8,
        n_groups=2,
        ssm_state_size=16,
        chunk_size=8,
        layer_norm_epsilon=1e-20,  # the gated norm sees variances ~1e-8 at init: keep eps negligible
        tie_word_embeddings=False,
        # one MoE block (Nemotron 3 Nano): 8 ungated experts in 2 routing groups, top-2 from the best group
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        moe_intermediate_size=32,
        moe_shared_expert_intermediate_size=48,
    ),
    # mamba_n_heads * mamba_d_head == mamba_expand * hidden_size (2 * 64), 16 heads in 2 groups
    "bamba": dict(
        num_hidden_layers=5,
        attn_layer_indices=[1, 4],
        mamba_n_heads=16,
        mamba_d_head=8,
        mamba_n_groups=2,
        mamba_d_state=16,
        mamba_chunk_size=8,
        rms_norm_eps=1e-20,
        tie_word_embeddings=False,
    ),
    # Granite 4 with 4 routed experts (top 2, width 32) beside the shared MLP; the same Mamba shape as bamba
    "granitemoehybrid": dict(
        num_hidden_layers=5,
        layer_types=[
            "linear_attention",
            "full_attention",
            "linear_attention",
            "linear_attention",
            "full_attention",
        ],
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=32,
        shared_intermediate_size=128,
        mamba_n_heads=16,
        mamba_d_head=8,
        mamba_n_groups=2,
        mamba_d_state=16,
        mamba_chunk_size=8,
        rms_norm_eps=1e-20,
        embedding_multiplier=2.0,
        residual_multiplier=0.5,
        attention_multiplier=0.2,
        logits_scaling=4.0,
        position_embedding_type="rope",
    ),
    # attention + Mamba-2 + MLP in every layer; 12 heads in 2 groups, mamba_d_ssm 96 (not tied to hidden 64),
    # every muP multiplier distinct from 1 so that a mis-sized mup_vector or a lost multiplier shows in the logits
    "falcon_h1": dict(
        mamba_d_ssm=96,
        mamba_n_heads=12,
        mamba_d_head=8,
        mamba_n_groups=2,
        mamba_d_state=16,
        mamba_chunk_size=8,
        mamba_rms_norm=True,
        rms_norm_eps=1e-20,
        ssm_multipliers=[0.5, 1.5, 0.7, 1.3, 0.9],
        mlp_multipliers=[1.2, 0.8],
        key_multiplier=0.9,
        attention_in_multiplier=1.1,
        attention_out_multiplier=0.7,
        ssm_in_multiplier=1.3,
        ssm_out_multiplier=0.6,
        embedding_multiplier=2.0,
        lm_head_multiplier=0.5,
    ),
}

ARCHITECTURES = sorted(ARCH_OVERRIDES)
HYBRID = sorted(HYBRID_OVERRIDES)
COMPOSITE = sorted(k for k, v in ARCH_OVERRIDES.items() if "vision" in v)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)


def tiny_config(model_type: str, **overrides):
    """Config of a tiny model of this family; overrides win over the defaults (in the text part)."""
    extra = dict({**ARCH_OVERRIDES, **MOE_OVERRIDES, **HYBRID_OVERRIDES}[model_type])
    if "vision" not in extra:
        return AutoConfig.for_model(model_type, **{**BASE, **extra, **overrides})
    vision = {**_VISION, **extra.pop("vision")}
    text = {**BASE, **overrides}
    if "text_model_type" in extra:
        text["model_type"] = extra.pop("text_model_type")
    return AutoConfig.for_model(model_type, text_config=text, vision_config=vision, **extra)


def model_class(config):
    """The Auto class that loads a checkpoint of this config (a vision-language wrapper's own for composites)."""
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return AutoModelForCausalLM
    return AutoModelForImageTextToText


def tiny_model(model_type: str = "llama", seed: int = 0, **overrides):
    """A tiny float32 model in eval mode with a fixed random init."""
    torch.manual_seed(seed)
    config = tiny_config(model_type, **overrides)
    return model_class(config).from_config(config, dtype=torch.float32).eval()


def random_batches(
    n: int = 3,
    batch_size: int = 2,
    seq_len: int = 16,
    vocab_size: int = 128,
    seed: int = 0,
    pad_last: int = 0,
):
    """Calibration batches of random token ids; the last `pad_last` positions of row 0 are padding."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(3, vocab_size, (batch_size, seq_len), generator=g)
        mask = torch.ones_like(ids)
        if pad_last:
            ids[0, -pad_last:] = 0
            mask[0, -pad_last:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


# ---------------------------------------------------------------- dead units, written on transformers' own names
def _zero_rows(linear, rows) -> None:
    linear.weight[rows] = 0
    if getattr(linear, "bias", None) is not None:
        linear.bias[rows] = 0


def _first(module, *names):
    return next(getattr(module, n) for n in names if hasattr(module, n))


def _gain_offset(norm) -> float:
    """1.0 for a norm computing x * (1 + weight), probed: with a zero weight it still passes the input on."""
    saved = norm.weight.detach().clone()
    with torch.no_grad():
        norm.weight.zero_()
        out = norm(torch.randn(2, saved.shape[0])) - (
            norm.bias if getattr(norm, "bias", None) is not None else 0
        )
        norm.weight.copy_(saved)
    return 1.0 if out.abs().max() > 1e-6 else 0.0


def mlp_first(mlp):
    """The linear(s) that produce the MLP neurons, and whether they are fused [gate | up]."""
    if hasattr(mlp, "gate_up_proj"):
        return [mlp.gate_up_proj], True
    return [getattr(mlp, n) for n in ("gate_proj", "up_proj", "fc1", "c_fc") if hasattr(mlp, n)], False


def attn_out(attn):
    return _first(attn, "o_proj", "dense")


def mlp_out(mlp):
    return _first(mlp, "down_proj", "fc2", "c_proj")


def text_config_of(model):
    return model.config.get_text_config()


def _zero_rows(linear, rows) -> None:
    linear.weight[rows] = 0
    if getattr(linear, "bias", None) is not None:
        linear.bias[rows] = 0


def _first(module, *names):
    return next(getattr(module, n) for n in names if hasattr(module, n))


def zero_components(model, neurons=ZERO_NEURONS, groups=ZERO_GROUPS, dead_layer=ZERO_LAYER) -> None:
    """Make neurons, two KV groups (their q, k and v rows) and one whole layer contribute nothing, with plain
    tensor writes on the module names transformers uses (fused [q|k|v] and [gate|up] layouts included)."""
    c = text_config_of(model)
    hd, n_q, n_kv, inter = c.head_dim, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size
    per = n_q // n_kv
    kv_rows = torch.cat([torch.arange(g * hd, (g + 1) * hd) for g in groups])
    q_rows = torch.cat(
        [torch.arange(h * hd, (h + 1) * hd) for g in groups for h in range(g * per, (g + 1) * per)]
    )
    with torch.no_grad():
        for i, layer in enumerate(model.get_decoder().layers):
            attn, mlp = layer.self_attn, layer.mlp
            if hasattr(attn, "qkv_proj"):
                _zero_rows(
                    attn.qkv_proj, torch.cat([q_rows, n_q * hd + kv_rows, (n_q + n_kv) * hd + kv_rows])
                )
            else:
                _zero_rows(attn.q_proj, q_rows)
                _zero_rows(attn.k_proj, kv_rows)
                _zero_rows(attn.v_proj, kv_rows)
            if hasattr(mlp, "gate_up_proj"):
                _zero_rows(mlp.gate_up_proj, inter + neurons)
            else:
                _zero_rows(_first(mlp, "up_proj", "fc1", "c_fc"), neurons)
            if i == dead_layer:
                for writer in (attn_out(attn), mlp_out(mlp)):
                    _zero_rows(writer, slice(None))


def zero_channels(model, channels) -> None:
    """Make hidden channels dead everywhere: never written (embedding, o/down rows), never read (every input
    column, LM head), zero norm gains; on a norm without mean-centring the others then see exactly what they saw."""

    decoder = model.get_decoder()
    final_norm = _first(decoder, "norm", "final_layernorm")
    offset = _gain_offset(final_norm)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, channels] = 0
        model.get_output_embeddings().weight[:, channels] = 0
        for name, module in decoder.named_modules():
            if not name.startswith("layers") and module is not final_norm:
                continue
            if isinstance(module, torch.nn.Linear):
                if module.in_features == text_config_of(model).hidden_size and name.split(".")[-1] not in (
                    "o_proj",
                    "dense",
                ):
                    module.weight[:, channels] = 0
                if name.split(".")[-1] in ("o_proj", "dense", "down_proj", "fc2", "c_proj"):
                    _zero_rows(module, channels)
            elif getattr(module, "weight", None) is not None and module.weight.shape == (
                text_config_of(model).hidden_size,
            ):
                module.weight[channels] = -offset
                if getattr(module, "bias", None) is not None:
                    module.bias[channels] = 0


# Mixture-of-experts families: 4 experts, top-2 (8 for the dead-expert matrix in test_moe.py), expert width 32.
MOE_OVERRIDES: dict[str, dict] = {
    "qwen3_moe": dict(
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        mlp_only_layers=[1],
        norm_topk_prob=True,
    ),
    "qwen2_moe": dict(
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=48,
        decoder_sparse_step=2,
    ),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=32, sliding_window=None),
    "olmoe": dict(num_experts=4, num_experts_per_tok=2, intermediate_size=32, rms_norm_eps=1e-12),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=32, sliding_window=16),
    "llama4_text": dict(
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=32,
        intermediate_size_mlp=128,
        moe_layers=[0, 1, 3],
        no_rope_layer_interval=2,
        attention_chunk_size=16,
    ),
    # sigmoid routing with a score-correction bias, one shared expert, layer 0 dense (first_k_dense_replace)
    "glm4_moe": dict(
        n_routed_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        n_shared_experts=1,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
    ),
    # LayerNorms, attention biases, sparsemixer top-2 routing
    "phimoe": dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=32, attention_bias=True),
    # experts under block_sparse_moe, Granite's multipliers
    "granitemoe": dict(
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=32,
        embedding_multiplier=2.0,
        residual_multiplier=0.5,
        attention_multiplier=0.2,
        logits_scaling=4.0,
    ),
    # Granite-MoE plus a shared MLP with a fused [gate | up] input_linear
    "granitemoeshared": dict(
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=32,
        shared_intermediate_size=48,
        embedding_multiplier=2.0,
        residual_multiplier=0.5,
        attention_multiplier=0.2,
        logits_scaling=4.0,
    ),
    # layer 0 dense (moe_layer_start_index), two shared experts as wide as two routed ones, score-correction bias
    "ernie4_5_moe": dict(
        moe_num_experts=4,
        moe_k=2,
        moe_intermediate_size=32,
        moe_num_shared_experts=2,
        moe_layer_start_index=1,
    ),
}
MOE = sorted(MOE_OVERRIDES)


# Gated DeltaNet hybrids (tests/test_deltanet.py): linear-attention and full-attention layers in `layer_types`.
DELTANET_PATTERN = ["linear_attention", "full_attention", "linear_attention", "full_attention"]
DELTANET_OVERRIDES: dict[str, dict] = {
    # Gated DeltaNet: 6 value heads (12 wide) in 2 key heads (8 wide); 4 experts top-2, a shared expert, a dense
    # MLP in layer 1; the gated norm sees tiny variances at init, so eps is kept negligible
    "qwen3_next": dict(
        layer_types=DELTANET_PATTERN,
        linear_num_value_heads=6,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=12,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=48,
        mlp_only_layers=[1],
        rms_norm_eps=1e-20,
    ),
    # the same DeltaNet shape, dense MLPs
    "qwen3_5_text": dict(
        layer_types=DELTANET_PATTERN,
        linear_num_value_heads=6,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=12,
        rms_norm_eps=1e-20,
    ),
    # post-norm attention layers with q/k norms over all heads, pre-norm DeltaNet layers, dense MLPs
    "olmo_hybrid": dict(
        layer_types=DELTANET_PATTERN,
        linear_num_value_heads=6,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=12,
        rms_norm_eps=1e-20,
        tie_word_embeddings=False,
    ),
    # Qwen 3.5's DeltaNet shape with a sparse MoE block (4 experts top-2, shared expert) in every layer
    "qwen3_5_moe_text": dict(
        layer_types=DELTANET_PATTERN,
        linear_num_value_heads=6,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=12,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=48,
        rms_norm_eps=1e-20,
    ),
}
HYBRID_OVERRIDES.update(DELTANET_OVERRIDES)
HYBRID[:] = sorted(HYBRID_OVERRIDES)
