"""Distilling mixture-of-experts students: the chunked loss, the router load-balancing loss, Llama 4's decoder."""

from __future__ import annotations

import pytest
import torch
from test_moe import _keys, _logits, _manual_scores, _router, _sparse
from tiny_models import MOE, tiny_model
from transformers import AutoModelForCausalLM

from hf_minitron.config import PruningConfig
from hf_minitron.pruning import prune_model


@pytest.mark.parametrize("arch", MOE)
def test_distillation_loss_of_a_pruned_moe_student_matches_full_logits(tmp_path, arch):
    """The existing chunked distillation loss works on a MoE student pruned to fewer, narrower experts."""
    import torch.nn.functional as F
    from distill_worker import tiny_args, token_dataset
    from test_distill_losses import reference

    from hf_minitron import DistillationTrainer

    teacher, student = tiny_model(arch, seed=1), tiny_model(arch, seed=1)
    experts_key, width_key = _keys(student)
    prune_model(student, PruningConfig(**{experts_key: 3, width_key: 16}), _manual_scores(student))
    args = tiny_args(tmp_path, distill_temperature=2.0, lm_weight=0.5, distill_chunk_size=5)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    inputs = {k: torch.tensor(v) for k, v in token_dataset(3, ragged=True)[:].items()}
    with torch.no_grad():
        got = trainer.compute_loss(student, inputs)
        s_logits = student(**inputs).logits[:, :-1]
        t_logits = teacher(**inputs).logits[:, :-1]
    mask, labels = inputs["attention_mask"], inputs["labels"]
    keep = (labels[:, 1:] != -100) & mask[:, 1:].bool()
    kl = reference("forward_kl", s_logits[keep], t_logits[keep], 2.0).mean()
    ce = F.cross_entropy(s_logits[keep].double(), labels[:, 1:][keep])
    torch.testing.assert_close(got.double(), kl + 0.5 * ce, rtol=1e-5, atol=1e-6)


AUX = [a for a in MOE if a not in ("glm4_moe", "llama4_text")]  # their forwards define no load-balancing loss


def _hand_load_balancing_loss(router_inputs, routers, attention_mask, top_k) -> torch.Tensor:
    """Switch Transformer's loss by hand, over every (MoE layer, non-padded token) row: E x sum_e f_e P_e, with f_e
    the top-k picks of expert e per row and P_e its mean softmax probability (router logits recomputed here)."""
    n_experts = routers[0].weight.shape[0]
    picks, probs, rows = torch.zeros(n_experts), torch.zeros(n_experts), 0
    keep = attention_mask.reshape(-1).bool()
    for x, router in zip(router_inputs, routers):
        logits = x.reshape(-1, x.shape[-1]) @ router.weight.T
        if getattr(router, "bias", None) is not None:
            logits = logits + router.bias
        for p in logits.float().softmax(-1)[keep]:
            rows += 1
            probs += p
            picks[p.topk(top_k).indices] += 1
    return n_experts * (picks / rows * probs / rows).sum()


@pytest.mark.parametrize("arch", AUX)
def test_router_aux_loss_is_added_to_the_distillation_loss_and_logged(tmp_path, arch):
    """With output_router_logits and a coefficient, the loss gains coef x the router load-balancing loss (against
    a hand computation on a student pruned to 3 experts), logged as aux_loss; its gradient reaches the routers."""
    from distill_worker import tiny_args, token_dataset

    from hf_minitron import DistillationTrainer

    teacher = tiny_model(arch, seed=1)
    student = tiny_model(arch, seed=1, output_router_logits=True, router_aux_loss_coef=0.25)
    experts_key, _ = _keys(student)
    prune_model(student, PruningConfig(**{experts_key: 3}), _manual_scores(student))
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=tiny_args(tmp_path, lm_weight=0.5, distill_chunk_size=5)
    )
    inputs = {k: torch.tensor(v) for k, v in token_dataset(3, ragged=True)[:].items()}
    routers = [_router(block) for _, block in _sparse(student)]
    student.train()

    def loss_and_router_grads():
        captured = []
        hooks = [r.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach())) for r in routers]
        student.zero_grad()
        torch.manual_seed(0)  # Phi-MoE's sparsemixer samples its routing in training mode
        loss = trainer.compute_loss(student, inputs)
        loss.backward()
        for h in hooks:
            h.remove()
        return loss.detach(), [r.weight.grad.clone() for r in routers], captured

    on, on_grads, router_inputs = loss_and_router_grads()
    trainer.log({"loss": 0.0})
    logged = trainer.state.log_history[-1]
    expected = _hand_load_balancing_loss(router_inputs, routers, inputs["attention_mask"], 2)
    assert logged["aux_loss"] == pytest.approx(expected.item(), abs=2e-6)
    for off_config in (dict(output_router_logits=False), dict(router_aux_loss_coef=0.0)):
        student.config.update({"output_router_logits": True, "router_aux_loss_coef": 0.25, **off_config})
        off, off_grads, _ = loss_and_router_grads()
        torch.testing.assert_close(on - off, 0.25 * expected, atol=1e-5, rtol=1e-4)
        assert all((a - b).abs().max() > 1e-6 for a, b in zip(on_grads, off_grads))  # per MoE layer
        trainer.log({"loss": 0.0})
        assert "aux_loss" not in trainer.state.log_history[-1]


def test_llama4_decoder_is_found_for_the_lm_loss_and_the_hidden_state_loss(tmp_path):
    """Llama4ForCausalLM.get_decoder() returns the LM itself in transformers 5.x: the trunk is its `model`. The
    chunked LM loss equals the full-logits cross-entropy, and a student identical to its teacher has zero
    distillation and hidden-state losses (a mapped middle layer)."""
    import torch.nn.functional as F
    from distill_worker import tiny_args, token_dataset

    from hf_minitron import DistillationTrainer
    from hf_minitron.architectures.spec import decoder_of
    from hf_minitron.evaluation import lm_loss_sum

    teacher, student = tiny_model("llama4_text", seed=1), tiny_model("llama4_text", seed=1)
    assert teacher.get_decoder() is teacher and decoder_of(teacher) is teacher.model
    inputs = {k: torch.tensor(v) for k, v in token_dataset(3, ragged=True)[:].items()}
    total, count = lm_loss_sum(teacher, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
    logits = _logits(teacher, {k: inputs[k] for k in ("input_ids", "attention_mask")})[:, :-1]
    expected = F.cross_entropy(logits.flatten(0, 1), inputs["labels"][:, 1:].flatten(), reduction="sum")
    torch.testing.assert_close(total, expected, atol=1e-4, rtol=1e-5)
    args = tiny_args(tmp_path, hidden_state_weight=1.0, hidden_state_loss="mse", layer_mapping={1: 1})
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    student.train()
    loss = trainer.compute_loss(student, inputs)
    trainer.log({"loss": 0.0})
    logged = trainer.state.log_history[-1]
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # lm_weight 0: distillation and hidden states only
    assert logged["lm_loss"] == pytest.approx((expected / count).item(), abs=1e-5)
    assert logged["distill_loss"] == pytest.approx(0.0, abs=1e-6)
    assert logged["hidden_state_loss"] == pytest.approx(0.0, abs=1e-6)


def test_router_aux_loss_in_a_training_run_from_a_saved_config(tmp_path):
    """The documented path: prune, save, switch the loss on in config.json, reload, train with gradient
    accumulation; every logged step carries aux_loss, and the saved student keeps the setting."""
    import json

    from distill_worker import tiny_args, token_dataset

    from hf_minitron import DistillationTrainer

    teacher, student = tiny_model("qwen3_moe", seed=1), tiny_model("qwen3_moe", seed=1)
    prune_model(student, PruningConfig(num_experts=3), _manual_scores(student))
    student.save_pretrained(tmp_path / "pruned")
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["output_router_logits"] is False  # the default: off
    config.update(output_router_logits=True, router_aux_loss_coef=0.01)
    (tmp_path / "pruned" / "config.json").write_text(json.dumps(config))
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    args = tiny_args(
        tmp_path / "out",
        max_steps=2,
        logging_steps=1,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=2,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=token_dataset(8)
    )
    trainer.train()
    steps = [log for log in trainer.state.log_history if "loss" in log and "train_runtime" not in log]
    assert len(steps) == 2 and all(0 < log["aux_loss"] < 10 for log in steps)
    trainer.save_model(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["output_router_logits"] is True


@pytest.mark.parametrize("arch", ["glm4_moe", "llama4_text"])
def test_router_aux_loss_of_a_family_without_one_warns_and_adds_nothing(tmp_path, arch, caplog):
    from distill_worker import tiny_args, token_dataset

    from hf_minitron import DistillationTrainer

    teacher = tiny_model(arch, seed=1)
    student = tiny_model(arch, seed=1, output_router_logits=True, router_aux_loss_coef=0.125)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=tiny_args(tmp_path, lm_weight=0.5)
    )
    inputs = {k: torch.tensor(v) for k, v in token_dataset(2)[:].items()}
    student.train()
    with caplog.at_level("WARNING", logger="hf_minitron.distillation.router"):
        on = trainer.compute_loss(student, inputs)
    assert f"{arch}'s forward returns no aux_loss" in caplog.text
    trainer.log({"loss": 0.0})
    assert "aux_loss" not in trainer.state.log_history[-1]
    student.config.output_router_logits = False
    torch.testing.assert_close(trainer.compute_loss(student, inputs), on)
