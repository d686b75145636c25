"""estimate_importance against plain computations on full activations (collected here with our own hooks)."""

from __future__ import annotations

import copy
import dataclasses
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from tiny_models import ARCHITECTURES, random_batches, tiny_model

from hf_minitron.config import PruningConfig
from hf_minitron.importance import ImportanceScores, estimate_importance

ALL = PruningConfig(
    hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=3, importance="activation"
)


def _collect(model, batches):
    """Full activations: down_proj inputs, o_proj inputs, hidden-size norm outputs; with the masks."""
    acts = {"neurons": [], "heads": [], "channels": []}
    handles = []
    for layer in model.model.layers:
        handles.append(
            layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: acts["neurons"].append(a[0]))
        )
        handles.append(
            layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a: acts["heads"].append(a[0]))
        )
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            handles.append(norm.register_forward_hook(lambda m, a, o: acts["channels"].append(o)))
    handles.append(model.model.norm.register_forward_hook(lambda m, a, o: acts["channels"].append(o)))
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in handles:
        h.remove()
    return acts


def _reference(values_per_batch, masks, n_streams, seq_agg, batch_agg):
    """values_per_batch: list over batches of lists over streams of [B, T, D]."""
    results = []
    for s in range(n_streams):
        samples = []
        for batch, mask in zip(values_per_batch, masks):
            x = batch[s]
            for b in range(x.shape[0]):
                tokens = x[b][mask[b].bool()]
                samples.append(tokens.abs().mean(0) if seq_agg == "mean" else tokens.pow(2).sum(0).sqrt())
        v = torch.stack(samples)
        results.append(
            {"l2": v.pow(2).sum(0).sqrt(), "mean": v.mean(0), "var": v.var(0, unbiased=False)}[batch_agg]
        )
    return torch.stack(results)


@pytest.mark.parametrize("seq_agg", ["mean", "l2"])
@pytest.mark.parametrize("batch_agg", ["l2", "mean", "var"])
def test_statistics_match_plain_computation(seq_agg, batch_agg):
    model = tiny_model("llama")
    batches = random_batches(n=2, pad_last=5)
    config = PruningConfig(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        sequence_aggregation=seq_agg,
        batch_aggregation=batch_agg,
        importance="activation",
    )
    scores = estimate_importance(model, batches, config)
    acts = _collect(model, batches)
    masks = [b["attention_mask"] for b in batches]
    n_layers = 4

    def per_batch(key, per_call):
        calls = acts[key]
        return [calls[i * per_call : (i + 1) * per_call] for i in range(len(batches))]

    neurons = _reference(per_batch("neurons", n_layers), masks, n_layers, seq_agg, batch_agg)
    torch.testing.assert_close(scores.neurons, neurons, atol=1e-5, rtol=1e-4)
    heads = [[x.unflatten(-1, (8, 8)).norm(dim=-1) for x in calls] for calls in per_batch("heads", n_layers)]
    torch.testing.assert_close(
        scores.heads, _reference(heads, masks, n_layers, seq_agg, batch_agg), atol=1e-5, rtol=1e-4
    )
    channels = _reference(
        per_batch("channels", 2 * n_layers + 1), masks, 2 * n_layers + 1, seq_agg, batch_agg
    )
    torch.testing.assert_close(scores.channels, channels.sum(0), atol=1e-4, rtol=1e-4)
    assert scores.layers is None
    assert scores.metadata["batch_aggregation"] == batch_agg and scores.metadata["num_samples"] == 4


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_padding_is_ignored(arch):
    """A right-padded batch scores like the same rows fed one by one without their padding."""
    model = tiny_model(arch)
    padded = random_batches(n=2, pad_last=6)
    unpadded = []
    for b in padded:
        for row in range(2):
            n = int(b["attention_mask"][row].sum())
            unpadded.append({"input_ids": b["input_ids"][row : row + 1, :n]})
    a = estimate_importance(model, padded, ALL)
    b = estimate_importance(model, unpadded, ALL)
    for name in ("neurons", "heads", "channels", "layers"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-4)


def test_block_importance_is_one_minus_cosine_of_layer_input_and_output():
    model = tiny_model("llama")
    batch = random_batches(n=1, pad_last=4)[0]
    scores = estimate_importance(model, [batch], PruningConfig(num_hidden_layers=2, importance="activation"))
    with torch.no_grad():
        hs = model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].bool()
    for i in range(3):  # the last hidden state is after the final norm
        ref = (1 - F.cosine_similarity(hs[i], hs[i + 1], dim=-1))[mask].mean()
        assert scores.layers[i].item() == pytest.approx(ref.item(), abs=1e-5)
    assert scores.neurons is None and scores.channels is None


def test_perplexity_metric_is_the_loss_without_the_layer():
    model = tiny_model("llama")
    batch = random_batches(n=1, pad_last=4)[0]
    scores = estimate_importance(
        model, [batch], PruningConfig(num_hidden_layers=3, depth_metric="perplexity", importance="activation")
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for i in range(4):
        ref = copy.deepcopy(model)
        del ref.model.layers[i]
        ref.config.num_hidden_layers = 3
        with torch.no_grad():
            loss = ref(**batch, labels=labels, use_cache=False).loss
        assert scores.layers[i].item() == pytest.approx(loss.item(), abs=1e-5)


def test_hooks_are_removed_also_on_error():
    model = tiny_model("llama")
    bad = [{"input_ids": torch.tensor([[1000, 1001]])}]  # out of vocabulary: the forward raises
    with pytest.raises(IndexError):
        estimate_importance(model, bad, ALL)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not hasattr(model.model.layers[0], "__dict__") or "forward" not in model.model.layers[0].__dict__


def test_empty_calibration_data_is_refused():
    with pytest.raises(ValueError, match="batches"):
        estimate_importance(tiny_model("llama"), [], ALL)
    with pytest.raises(ValueError, match="batches"):
        estimate_importance(
            tiny_model("llama"),
            iter([]),
            PruningConfig(num_hidden_layers=2, depth_metric="perplexity", importance="activation"),
        )


def test_scores_round_trip_and_shape_check(tmp_path):
    model = tiny_model("qwen3")
    scores = estimate_importance(model, random_batches(n=1), None)
    scores.save(tmp_path / "scores.safetensors")
    loaded = ImportanceScores.load(tmp_path / "scores.safetensors")
    for name in ("neurons", "heads", "channels", "layers"):
        assert torch.equal(getattr(loaded, name), getattr(scores, name))
        assert getattr(loaded, name).dtype == torch.float32
    assert loaded.metadata == scores.metadata and loaded.metadata["model_type"] == "qwen3"
    loaded.check_compatible(model.config)
    with pytest.raises(ValueError, match="scores.neurons"):
        loaded.check_compatible(tiny_model("qwen3", intermediate_size=96).config)


def test_bfloat16_model():
    model = tiny_model("gemma2").to(torch.bfloat16)
    scores = estimate_importance(model, random_batches(n=1), ALL)
    assert all(torch.isfinite(getattr(scores, n)).all() for n in ("neurons", "heads", "channels", "layers"))
    assert scores.neurons.dtype == torch.float32


def test_dispatched_model_gives_the_same_scores():
    from accelerate import dispatch_model

    model = tiny_model("llama")
    ref = estimate_importance(model, random_batches(n=1), ALL)
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    device_map.update({f"model.layers.{i}": "cpu" for i in range(4)})
    dispatched = dispatch_model(model, device_map=device_map)
    got = estimate_importance(dispatched, random_batches(n=1), ALL)
    for name in ("neurons", "heads", "channels", "layers"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name))


def test_taylor_and_magnitude_dispatch_only_requested_axes_and_depth_metric_for_layers():
    from hf_minitron.importance.magnitude import estimate_magnitude_importance
    from hf_minitron.importance.taylor import estimate_taylor_importance

    model = tiny_model("llama")
    batches = random_batches(n=2)
    for criterion in ("taylor", "magnitude"):
        config = PruningConfig(intermediate_size=64, importance=criterion)
        direct = (
            estimate_taylor_importance(model, batches, config)
            if criterion == "taylor"
            else estimate_magnitude_importance(model, config)
        )
        scores = estimate_importance(model, batches, config)
        torch.testing.assert_close(scores.neurons, direct.neurons)
        assert scores.heads is None and scores.channels is None and scores.layers is None
        assert scores.metadata["importance"] == criterion and "depth_metric" not in scores.metadata
        # layers are ranked by the depth metric, whatever the width criterion
        depth = PruningConfig(num_hidden_layers=3, importance=criterion)
        expected = estimate_importance(
            model, batches, PruningConfig(num_hidden_layers=3, importance="activation")
        )
        depth_scores = estimate_importance(model, batches, depth)
        torch.testing.assert_close(depth_scores.layers, expected.layers)
        assert depth_scores.metadata["depth_metric"] == "block_importance"
    # nothing to prune: no pass at all, whatever the criterion
    empty = estimate_importance(model, iter(()), PruningConfig(importance="taylor"))
    assert (empty.neurons, empty.heads, empty.channels, empty.layers) == (None, None, None, None)


def _distributed_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    sys.path.insert(0, os.path.dirname(__file__))
    from tiny_models import random_batches, tiny_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    batches = random_batches(n=4, pad_last=3)[rank::world]
    scores = estimate_importance(tiny_model("llama"), batches, ALL)
    scores.save(os.path.join(out_dir, f"rank{rank}.safetensors"))
    taylor = estimate_importance(tiny_model("llama"), batches, dataclasses.replace(ALL, importance="taylor"))
    taylor.save(os.path.join(out_dir, f"taylor{rank}.safetensors"))
    dist.destroy_process_group()


@pytest.mark.distributed
def test_statistics_are_reduced_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    # rank 1 in a spawned process, rank 0 in this one (one interpreter start instead of two)
    args = (2, str(tmp_path / "init"), str(tmp_path))
    child = mp.get_context("spawn").Process(target=_distributed_worker, args=(1, *args))
    child.start()
    try:
        _distributed_worker(0, *args)
    finally:
        child.join(timeout=120)
    assert child.exitcode == 0
    ref = estimate_importance(tiny_model("llama"), random_batches(n=4, pad_last=3), ALL)
    ranks = [ImportanceScores.load(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    for name in ("neurons", "heads", "channels", "layers"):
        assert torch.equal(getattr(ranks[0], name), getattr(ranks[1], name))
        torch.testing.assert_close(getattr(ranks[0], name), getattr(ref, name), atol=1e-5, rtol=1e-4)
    assert ranks[0].metadata["num_samples"] == 8
    # Taylor: each rank's |w x g| sums over its own batches, reduced to the one-process sum over all of them
    ref = estimate_importance(
        tiny_model("llama"), random_batches(n=4, pad_last=3), dataclasses.replace(ALL, importance="taylor")
    )
    ranks = [ImportanceScores.load(tmp_path / f"taylor{r}.safetensors") for r in range(2)]
    for name in ("neurons", "heads", "channels"):
        assert torch.equal(getattr(ranks[0], name), getattr(ranks[1], name))
        torch.testing.assert_close(getattr(ranks[0], name), getattr(ref, name), atol=1e-6, rtol=1e-4)
    assert ranks[0].metadata["num_samples"] == 8
