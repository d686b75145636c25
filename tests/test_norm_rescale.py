"""The data-aware norm rescale against references computed by hand from each norm's input on the calibration data."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import random_batches, tiny_model, zero_channels

from hf_minitron.architectures import get_spec
from hf_minitron.config import PruningConfig
from hf_minitron.importance import ImportanceScores, estimate_importance
from hf_minitron.importance.estimate import norm_input_statistics
from hf_minitron.pruning import prune_model

HIDDEN = 64
# an RMSNorm family, a (1 + w) RMSNorm family, a LayerNorm family, a (1 + w) LayerNorm family
FAMILIES = ["llama", "gemma3_text", "starcoder2", "nemotron"]


def _hidden_norms(model) -> dict[str, torch.nn.Module]:
    """Every norm over the hidden size in the decoder, found by class name and width (not from the spec)."""
    return {
        name: m
        for name, m in model.named_modules()
        if "norm" in type(m).__name__.lower()
        and isinstance(getattr(m, "weight", None), torch.Tensor)
        and m.weight.shape == (HIDDEN,)
    }


def _centres(norm) -> bool:
    """Whether a norm subtracts the mean (LayerNorm): a constant input then normalizes to its bias."""
    with torch.no_grad():
        out = norm(torch.ones(1, HIDDEN)) - (norm.bias if getattr(norm, "bias", None) is not None else 0)
    return bool(out.abs().max() < 1e-3)


def _offset(norm) -> float:
    """1.0 for a norm computing x * (1 + weight): with a zero weight it still passes the input on."""
    saved = norm.weight.detach().clone()
    with torch.no_grad():
        norm.weight.zero_()
        out = norm(torch.randn(2, HIDDEN)) - (norm.bias if getattr(norm, "bias", None) is not None else 0)
        norm.weight.copy_(saved)
    return 1.0 if out.abs().max() > 1e-6 else 0.0


def _captured_inputs(model, norms, batches) -> dict[str, torch.Tensor]:
    """Each norm's input at the non-padded tokens of `batches`, [tokens, hidden], by plain forward hooks."""
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in norms}
    mask: list[torch.Tensor] = []
    handles = [
        m.register_forward_pre_hook(lambda _, args, n=n: seen[n].append(args[0][mask[0].bool()].float()))
        for n, m in norms.items()
    ]
    with torch.no_grad():
        for batch in batches:
            mask[:] = [batch["attention_mask"]]
            model(**batch)
    for h in handles:
        h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def _factor(x: torch.Tensor, kept, centred: bool) -> float:
    """rms over the kept channels / rms over all, in mean square over the tokens: sqrt(E_K / |K| / (E / n))."""
    if centred:
        x = x - x.mean(-1, keepdim=True)
    energy = x.double().pow(2).mean(0)
    return math.sqrt(float(energy[kept].mean() / energy.mean()))


def _skip_final(model, name: str) -> bool:
    """Gemma's tied, sqrt(hidden)-scaled embedding also divides the final norm's gain (tested elsewhere)."""
    spec = get_spec(model)
    return name == spec.final_norm_path and spec.embed_scale_from_hidden_size


@pytest.mark.parametrize("arch", FAMILIES)
def test_gains_follow_the_energy_each_norm_loses(arch):
    """Every kept gain (offset + w) is multiplied by sqrt((E_kept / |K|) / (E_all / n)) of that norm's own input
    over the non-padded calibration tokens (centred on the token mean for a LayerNorm)."""
    model = tiny_model(arch)
    norms = _hidden_norms(model)
    assert len(norms) >= 3
    batches = random_batches(pad_last=5)
    inputs = _captured_inputs(model, norms, batches)
    old = {n: m.weight.detach().clone() for n, m in norms.items()}
    kinds = {n: (_centres(m), _offset(m)) for n, m in norms.items()}
    target = PruningConfig(
        hidden_size=40, importance="activation", rescale_norms=True, norm_rescale_factor="data"
    )
    scores = estimate_importance(model, batches, target)
    assert set(scores.norm_inputs) == set(norms)
    prune_model(model, target, scores)
    kept = model.config.minitron["kept_hidden_channels"]
    fixed = math.sqrt(HIDDEN / 40)
    for name, norm in norms.items():
        if _skip_final(model, name):
            continue
        centred, offset = kinds[name]
        f = _factor(inputs[name], kept, centred)
        assert abs(f - fixed) > 1e-3  # random channels carry energy: the fixed factor would be wrong
        expected = (offset + old[name][kept]) * f - offset
        torch.testing.assert_close(norm.weight.detach(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_kept_norm_outputs_are_unchanged_on_a_one_token_calibration(arch):
    """With one non-padded calibration token the data-aware factor is that token's rms ratio: every pruned RMSNorm
    gives the kept channels exactly what the unpruned one gave them (the fixed factor does not)."""
    model = tiny_model(arch, rms_norm_eps=1e-12)
    norms = _hidden_norms(model)
    batches = [{"input_ids": torch.tensor([[5, 0, 0, 0]]), "attention_mask": torch.tensor([[1, 0, 0, 0]])}]
    inputs = _captured_inputs(model, norms, batches)
    with torch.no_grad():
        before = {n: norms[n](inputs[n]) for n in norms}
    old = {n: m.weight.detach().clone() for n, m in norms.items()}
    offsets = {n: _offset(m) for n, m in norms.items()}
    target = PruningConfig(
        hidden_size=40, importance="activation", rescale_norms=True, norm_rescale_factor="data"
    )
    prune_model(model, target, estimate_importance(model, batches, target))
    kept = model.config.minitron["kept_hidden_channels"]
    for name, norm in norms.items():
        if _skip_final(model, name):
            continue
        with torch.no_grad():
            after = norm(inputs[name][:, kept])
        torch.testing.assert_close(after, before[name][:, kept], rtol=1e-4, atol=1e-6)
        offset = offsets[name]
        fixed_gain = (offset + old[name][kept]) * math.sqrt(HIDDEN / 40) - offset
        with torch.no_grad():
            norm.weight.copy_(fixed_gain)
            assert not torch.allclose(norm(inputs[name][:, kept]), before[name][:, kept], rtol=1e-3)


def test_channels_without_energy_give_the_fixed_factor():
    """Cutting channels that carry nothing: the data-aware factor is exactly sqrt(old / new), as without data."""
    dead = torch.arange(0, HIDDEN, 4)
    results = []
    for factor in ("data", "width"):
        model = tiny_model("llama")
        zero_channels(model, dead)
        old = {n: m.weight.detach().clone() for n, m in _hidden_norms(model).items()}
        target = PruningConfig(
            hidden_size=48, importance="activation", rescale_norms=True, norm_rescale_factor=factor
        )
        scores = estimate_importance(model, random_batches(), target)
        assert scores.norm_inputs
        prune_model(model, target, scores)
        kept = model.config.minitron["kept_hidden_channels"]
        assert not set(kept) & set(dead.tolist())
        gains = {n: m.weight.detach().clone() for n, m in _hidden_norms(model).items()}
        for name, gain in gains.items():
            torch.testing.assert_close(gain, old[name][kept] * math.sqrt(HIDDEN / 48), rtol=1e-6, atol=0)
        results.append(gains)
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-6, atol=0)


def test_statistics_survive_save_and_load(tmp_path):
    """The norm statistics are written to the safetensors file and read back; pruning with the loaded scores
    gives the same model."""
    batches = random_batches(pad_last=3)
    target = PruningConfig(
        hidden_size=40, importance="activation", rescale_norms=True, norm_rescale_factor="data"
    )
    model = tiny_model("gemma3_text")
    scores = estimate_importance(model, batches, target)
    scores.save(tmp_path / "scores.safetensors")
    loaded = ImportanceScores.load(tmp_path / "scores.safetensors")
    assert set(loaded.norm_inputs) == set(scores.norm_inputs) and loaded.norm_inputs
    for name, value in scores.norm_inputs.items():
        torch.testing.assert_close(loaded.norm_inputs[name], value, rtol=0, atol=0)
    assert set(loaded.tensors) == set(scores.tensors)
    prune_model(model, target, scores)
    other = prune_model(tiny_model("gemma3_text"), target, loaded)
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # a file written before the statistics existed loads with none, and the data factor refuses it untouched
    ImportanceScores(channels=scores.channels).save(tmp_path / "old.safetensors")
    old = ImportanceScores.load(tmp_path / "old.safetensors")
    assert old.norm_inputs == {}
    fresh = tiny_model("gemma3_text")
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match="norm_rescale_factor='data'"):
        prune_model(fresh, target, old)
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, before[name]), name
    # statistics of another model's width are refused before any cut, too
    wrong = ImportanceScores.load(tmp_path / "scores.safetensors")
    first = next(iter(wrong.norm_inputs))
    wrong.norm_inputs[first] = wrong.norm_inputs[first][:-1]
    with pytest.raises(ValueError, match="norm_inputs"):
        prune_model(fresh, target, wrong)
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_the_default_width_factor_ignores_the_statistics():
    """The default stays sqrt(old / new) even when the scores carry norm statistics (it keeps what the linear
    layers reading a pre-norm see; measured better on real Qwen weights)."""
    model = tiny_model("llama")
    old = {n: m.weight.detach().clone() for n, m in _hidden_norms(model).items()}
    target = PruningConfig(hidden_size=40, importance="activation", rescale_norms=True)
    assert target.norm_rescale_factor == "width"
    scores = estimate_importance(model, random_batches(pad_last=3), target)
    assert scores.norm_inputs
    prune_model(model, target, scores)
    kept = model.config.minitron["kept_hidden_channels"]
    for name, norm in _hidden_norms(model).items():
        torch.testing.assert_close(
            norm.weight.detach(), old[name][kept] * math.sqrt(HIDDEN / 40), rtol=1e-6, atol=0
        )


def test_depth_and_width_use_the_statistics_of_each_kept_source_layer():
    """Dropping layer 1 renumbers the kept layers: new layer j is rescaled with the energy of source layer
    kept[j], not of layer j."""
    model = tiny_model("llama")
    norms = _hidden_norms(model)
    batches = random_batches(pad_last=5)
    inputs = _captured_inputs(model, norms, batches)
    old = {n: m.weight.detach().clone() for n, m in norms.items()}
    target = PruningConfig(
        hidden_size=40,
        layers_to_drop=[1],
        importance="activation",
        rescale_norms=True,
        norm_rescale_factor="data",
    )
    prune_model(model, target, estimate_importance(model, batches, target))
    kept = model.config.minitron["kept_hidden_channels"]
    assert model.config.minitron["kept_layers"] == [0, 2, 3]
    layers = get_spec(model).layers(model)
    for j, src in enumerate([0, 2, 3]):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            name = f"model.layers.{src}.{norm}"
            f = _factor(inputs[name], kept, False)
            if src != j:  # the layer it would wrongly read has a different factor
                assert abs(f - _factor(inputs[f"model.layers.{j}.{norm}"], kept, False)) > 1e-4
            torch.testing.assert_close(
                getattr(layers[j], norm).weight.detach(), old[name][kept] * f, rtol=1e-5, atol=1e-6
            )


def test_taylor_and_magnitude_with_data_record_the_same_statistics():
    """Taylor's forward records the norm inputs as the activation pass does; magnitude records them with one
    forward when it is given data and the data factor is asked for, and has none without data."""
    model = tiny_model("llama")
    batches = random_batches(pad_last=4)
    reference = estimate_importance(model, batches, PruningConfig(hidden_size=40, importance="activation"))
    taylor = estimate_importance(model, batches, PruningConfig(hidden_size=40, importance="taylor"))
    magnitude = PruningConfig(hidden_size=40, importance="magnitude", norm_rescale_factor="data")
    assert estimate_importance(model, None, magnitude).norm_inputs == {}
    width = PruningConfig(hidden_size=40, importance="magnitude")
    assert estimate_importance(model, batches, width).norm_inputs == {}  # no forward when nothing uses them
    with_data = estimate_importance(model, batches, magnitude).norm_inputs
    forward = norm_input_statistics(model, batches, {"channels"})
    assert set(reference.norm_inputs) == set(_hidden_norms(model))
    for stats in (taylor.norm_inputs, with_data, forward):
        assert set(stats) == set(reference.norm_inputs)
        for name, value in reference.norm_inputs.items():
            torch.testing.assert_close(stats[name], value, rtol=1e-5, atol=1e-8)


def test_full_width_head_norms_follow_the_energy_of_the_kept_heads():
    """OLMo 2's q/k norms span every head: cutting KV groups rescales them with the energy of the kept heads'
    entries in each layer's own q/k projections."""
    model = tiny_model("olmo2")
    names = [f"model.layers.{i}.self_attn.{n}" for i in range(4) for n in ("q_norm", "k_norm")]
    norms = {n: model.get_submodule(n) for n in names}
    batches = random_batches(pad_last=5)
    inputs = _captured_inputs(model, norms, batches)
    old = {n: m.weight.detach().clone() for n, m in norms.items()}
    target = PruningConfig(
        num_key_value_heads=2, importance="activation", rescale_norms=True, norm_rescale_factor="data"
    )
    scores = estimate_importance(model, batches, target)
    assert set(names) <= set(scores.norm_inputs)
    prune_model(model, target, scores)
    for i in range(4):
        groups = scores.heads[i].reshape(4, 2).sum(1).topk(2).indices.sort().values  # whole KV groups kept
        heads = torch.cat([torch.arange(2 * g, 2 * g + 2) for g in groups.tolist()])
        for n, units in (("q_norm", heads), ("k_norm", groups)):
            name = f"model.layers.{i}.self_attn.{n}"
            kept = (units.unsqueeze(-1) * 8 + torch.arange(8)).flatten()
            f = _factor(inputs[name], kept, False)
            assert abs(f - math.sqrt(2)) > 1e-3
            torch.testing.assert_close(norms[name].weight.detach(), old[name][kept] * f, rtol=1e-5, atol=1e-6)
