"""DistillationTrainer end to end on tiny models (CPU)."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from distill_worker import teacher_and_student, tiny_args, token_dataset
from test_distill_losses import reference
from tiny_models import ARCHITECTURES, tiny_model
from transformers import HfArgumentParser

from hf_minitron import DistillationArguments, DistillationTrainer


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def batch(ds):
    return {k: torch.tensor(v) for k, v in ds[:].items()}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_loss_matches_full_logits_reference(tmp_path, arch):
    teacher, student = tiny_model(arch, seed=1), tiny_model(arch, seed=2, num_hidden_layers=2)
    args = tiny_args(tmp_path, distill_temperature=2.0, lm_weight=0.5, distill_chunk_size=5)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    inputs = batch(token_dataset(3, ragged=True))
    with torch.no_grad():
        got = trainer.compute_loss(student, inputs)
        s_logits = student(**inputs).logits[:, :-1]
        t_logits = teacher(**inputs).logits[:, :-1]
    mask, labels = inputs["attention_mask"], inputs["labels"]
    keep = (labels[:, 1:] != -100) & mask[:, 1:].bool()
    kl = reference("forward_kl", s_logits[keep], t_logits[keep], 2.0).mean()
    ce = F.cross_entropy(s_logits[keep].double(), labels[:, 1:][keep])
    torch.testing.assert_close(got.double(), kl + 0.5 * ce, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    data = token_dataset(4, ragged=True)  # rows with different numbers of counted tokens
    results = []
    for bs, ga in ((4, 1), (1, 4)):
        teacher, student = teacher_and_student(num_hidden_layers=2)
        args = tiny_args(
            tmp_path / str(bs), max_steps=1, per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
            optim="sgd", learning_rate=1.0, lm_weight=0.5, hidden_state_weight=0.5,
        )  # fmt: skip
        DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data).train()
        results.append(state(student))
    assert_same(*results, atol=1e-6)
    assert not torch.equal(
        results[0]["lm_head.weight"], teacher_and_student(num_hidden_layers=2)[1].lm_head.weight
    )


def test_training_lowers_kl_and_leaves_teacher_frozen_and_unchanged(tmp_path):
    teacher, student = teacher_and_student(num_hidden_layers=2)
    teacher = teacher.to(torch.bfloat16)  # a teacher in a lower dtype than the student
    before = state(teacher)
    data = token_dataset(8)
    args = tiny_args(
        tmp_path, max_steps=25, learning_rate=3e-3, logging_steps=5, per_device_eval_batch_size=8
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, eval_dataset=data
    )
    start = trainer.evaluate()["eval_distill_loss"]
    trainer.train()
    end = trainer.evaluate()["eval_distill_loss"]
    assert end < 0.7 * start
    assert_same(before, state(teacher))
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert {"distill_loss", "lm_loss"} <= logged[0].keys()
    assert "hf-minitron" in student.model_tags


def test_evaluate_reports_distill_loss_lm_loss_and_perplexity(tmp_path):
    teacher, student = teacher_and_student()
    data = token_dataset(4, ragged=True)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=tiny_args(tmp_path, per_device_eval_batch_size=4),
        eval_dataset=data,
    )
    metrics = trainer.evaluate()
    with torch.no_grad():
        lm_loss = student(**batch(data)).loss.item()
    assert metrics["eval_lm_loss"] == pytest.approx(lm_loss, rel=1e-5)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(lm_loss), rel=1e-5)
    assert metrics["eval_distill_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)


def test_eval_loss_is_token_weighted_like_the_components(tmp_path):
    teacher, student = teacher_and_student()
    data = token_dataset(5, ragged=True)  # batches of one row: different numbers of counted tokens
    args = tiny_args(tmp_path, per_device_eval_batch_size=1, lm_weight=0.5)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, eval_dataset=data)
    metrics = trainer.evaluate()
    inputs = batch(data)
    with torch.no_grad():
        s_logits, t_logits = student(**inputs).logits[:, :-1], teacher(**inputs).logits[:, :-1]
    keep = (inputs["labels"][:, 1:] != -100) & inputs["attention_mask"][:, 1:].bool()
    kl = reference("forward_kl", s_logits[keep], t_logits[keep], 1.0).mean()
    ce = F.cross_entropy(s_logits[keep].double(), inputs["labels"][:, 1:][keep])
    assert metrics["eval_loss"] == pytest.approx((kl + 0.5 * ce).item(), rel=1e-5)
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_distill_loss"] + 0.5 * metrics["eval_lm_loss"])


def test_checkpoint_and_resume_continue_identically(tmp_path):
    # Student hidden 32 vs teacher 64 without provenance: a learned projection, which must resume too.
    def run(output_dir, resume=None):
        teacher, student = teacher_and_student(num_hidden_layers=2, hidden_size=32)
        args = tiny_args(
            output_dir, max_steps=4, save_strategy="steps", save_steps=2, hidden_state_weight=1.0
        )
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=token_dataset(16)
        )
        trainer.train(resume_from_checkpoint=resume)
        return state(student), state(trainer.projection)

    straight = run(tmp_path / "a")
    resumed = run(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint-2"))
    assert_same(straight[0], resumed[0], atol=1e-6)
    assert_same(straight[1], resumed[1], atol=1e-6)


def test_hidden_state_loss_for_depth_pruned_student(tmp_path):
    teacher, student = teacher_and_student(num_hidden_layers=2)
    student.config.minitron = {"source_num_hidden_layers": 4, "kept_layers": [0, 3], "source_hidden_size": 64}
    args = tiny_args(tmp_path, hidden_state_weight=1.0, distill_weight=0.0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    # Student layer 0 feeds surviving layer 3, whose input in the teacher is the output of teacher layer 2.
    assert trainer.layer_pairs == [(0, 2)] and trainer.projection is None
    inputs = batch(token_dataset(2, ragged=True))
    trainer.compute_loss(student.train(), inputs).backward()
    with torch.no_grad():
        s = student.model.norm(student(**inputs, output_hidden_states=True).hidden_states[1])
        t = teacher.model.norm(teacher(**inputs, output_hidden_states=True).hidden_states[3])
    keep = (inputs["labels"][:, 1:] != -100) & inputs["attention_mask"][:, 1:].bool()
    want = (1 - F.cosine_similarity(s[:, :-1][keep], t[:, :-1][keep], dim=-1)).mean()
    assert trainer._pop_means("train")["hidden_state_loss"] == pytest.approx(want.item(), rel=1e-5)
    assert student.model.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0
    assert not student.model.layers[1].mlp.down_proj.weight.grad.any()  # after the mapped layer: no gradient

    # An explicit mapping (negative indices count from the end) and Minitron's dynamic weight train fine.
    args = tiny_args(
        tmp_path,
        hidden_state_weight="auto",
        layer_mapping="-1:-1,0:1",
        hidden_state_loss="mse",
        logging_steps=1,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=token_dataset(8)
    )
    assert trainer.layer_pairs == [(0, 1), (1, 3)]
    trainer.train()
    assert all(math.isfinite(row["hidden_state_loss"]) for row in trainer.state.log_history[:-1])


def test_width_pruned_student_uses_kept_teacher_channels_else_a_projection(tmp_path):
    teacher, student = teacher_and_student(hidden_size=32)
    kept = list(range(0, 64, 2))
    student.config.minitron = {"source_num_hidden_layers": 4, "kept_layers": [0, 1, 2, 3], "source_hidden_size": 64,
                               "kept_hidden_channels": kept}  # fmt: skip
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=tiny_args(tmp_path, hidden_state_weight=1.0)
    )
    assert trainer.teacher_channels.tolist() == kept and trainer.projection is None
    assert trainer.layer_pairs == [(1, 1)]

    del student.config.minitron
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=tiny_args(tmp_path, hidden_state_weight=1.0),
        train_dataset=token_dataset(8),
    )  # fmt: skip
    initial = trainer.projection.weight.detach().clone()
    trainer.train()
    assert not torch.equal(initial, trainer.projection.weight)  # trained with the student
    trainer.save_model(str(tmp_path / "final"))
    reloaded = type(student).from_pretrained(str(tmp_path / "final"))
    assert not any("projection" in k for k in reloaded.state_dict())  # dropped at save


def test_no_training_args_pickle_and_no_token_in_any_written_file(tmp_path):
    token = "hf_DistillSecretToken0123456789"
    teacher, student = teacher_and_student(num_hidden_layers=2, hidden_size=32)
    args = tiny_args(tmp_path / "ckpt", max_steps=2, save_strategy="steps", save_steps=1, hidden_state_weight=1.0,
                     hub_token=token)  # fmt: skip
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=token_dataset(8)
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.json" for p in written)
    assert any(p.name == "distill_projection.safetensors" for p in written)
    assert not [p for p in written if p.name == "training_args.bin"]
    assert not [p for p in written if token.encode() in p.read_bytes()]
    final = {p.suffix for p in (tmp_path / "final").iterdir()}
    assert final <= {".json", ".safetensors"}, final  # hf-minitron's own output: no pickle at all


def test_bad_inputs_raise_before_training(tmp_path):
    teacher, student = teacher_and_student()
    small_vocab = tiny_model("llama", seed=2, vocab_size=96)
    teacher.train()
    with pytest.raises(ValueError, match=r"vocab.*128.*96"):
        DistillationTrainer(model=small_vocab, teacher_model=teacher, args=tiny_args(tmp_path))
    # a refused request leaves the teacher as it was
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    trainer = DistillationTrainer(
        model=small_vocab, teacher_model=teacher, args=tiny_args(tmp_path, distill_truncate_vocab=True, max_steps=1),
        train_dataset=token_dataset(4),  # tokens < 128 may exceed 96: keep to the shared ids
    )  # fmt: skip
    assert trainer.distill_vocab == 96
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            tiny_args(tmp_path, distill_temperature=bad)
    with pytest.raises(ValueError, match="distill_loss"):
        tiny_args(tmp_path, distill_loss="kl_both_ways")
    with pytest.raises(ValueError, match="teacher"):
        DistillationTrainer(model=student, args=tiny_args(tmp_path))
    for mapping, who in (({4: 1}, "student"), ({0: 9}, "teacher"), ({0: -5}, "teacher")):
        with pytest.raises(ValueError, match=f"{who} layer"):
            DistillationTrainer(
                model=student,
                teacher_model=teacher,
                args=tiny_args(tmp_path, hidden_state_weight=1.0, layer_mapping=mapping),
            )
    with pytest.raises(ValueError, match="hidden_state_weight"):
        tiny_args(tmp_path, hidden_state_weight="sometimes")


def test_unknown_logit_transform_is_refused_at_init(tmp_path):
    """A family whose forward multiplies the logits (like Falcon-H1's lm_head_multiplier) by what the head lacks."""
    from tiny_models import tiny_config
    from transformers import LlamaForCausalLM

    class Multiplied(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 3.0
            return out

    torch.manual_seed(0)
    odd = Multiplied(tiny_config("llama")).eval()
    teacher, student = teacher_and_student()
    with pytest.raises(ValueError, match=r"student's logits \(Multiplied\).*max difference"):
        DistillationTrainer(model=odd, teacher_model=teacher, args=tiny_args(tmp_path))
    with pytest.raises(ValueError, match=r"teacher's logits \(Multiplied\)"):
        DistillationTrainer(model=student, teacher_model=odd, args=tiny_args(tmp_path))
    assert all(p.requires_grad for p in odd.parameters())  # refused before the teacher was frozen


def test_arguments_parse_from_command_line(tmp_path):
    (args,) = HfArgumentParser(DistillationArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--hidden_state_weight", "auto", "--layer_mapping", "1:3",
         "--distill_loss", "jsd", "--report_to", "none"]
    )  # fmt: skip
    assert (args.hidden_state_weight, args.layer_mapping, args.distill_loss) == ("auto", {1: 3}, "jsd")
    assert DistillationArguments(output_dir=str(tmp_path), layer_mapping='{"0": 2}').layer_mapping == {0: 2}


def test_peft_student_trains_only_adapters(tmp_path):
    from peft import LoraConfig, get_peft_model

    teacher, student = teacher_and_student(num_hidden_layers=2)
    student = get_peft_model(
        student, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    before = state(student)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=tiny_args(tmp_path), train_dataset=token_dataset(8)
    )
    trainer.train()
    after = state(student)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)

    with_head = get_peft_model(
        tiny_model("llama", seed=3), LoraConfig(r=4, target_modules=["q_proj", "lm_head"])
    )
    with pytest.raises(ValueError, match="lm_head"):
        DistillationTrainer(model=with_head, teacher_model=teacher, args=tiny_args(tmp_path))


@pytest.mark.parametrize("lora", [False, True])
def test_correct_teacher_changes_the_teacher(tmp_path, lora):
    from peft import LoraConfig, PeftModel

    from hf_minitron import correct_teacher

    teacher = tiny_model("llama", seed=1)
    before = state(teacher)
    peft_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"]) if lora else None
    corrected = correct_teacher(
        teacher, token_dataset(8), peft_config=peft_config, output_dir=str(tmp_path), max_steps=3,
        learning_rate=1e-2, warmup_steps=0, per_device_train_batch_size=4, use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    after = state(corrected)
    assert not isinstance(corrected, PeftModel) and not corrected.training
    assert after.keys() == before.keys()  # a plain model: the LoRA adapter was merged back
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert os.path.isdir(tmp_path)


def test_student_from_prune_model_uses_its_provenance(tmp_path):
    import copy

    from tiny_models import random_batches

    from hf_minitron import PruningConfig, estimate_importance, prune_model

    teacher = tiny_model("llama", seed=1)
    config = PruningConfig(hidden_size=32, layers_to_drop=[1])
    student = prune_model(
        copy.deepcopy(teacher), config, estimate_importance(teacher, random_batches(), config)
    )
    record = student.config.minitron
    args = tiny_args(tmp_path, hidden_state_weight="auto", max_steps=2)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=token_dataset(8)
    )
    assert trainer.projection is None
    assert trainer.teacher_channels.tolist() == record["kept_hidden_channels"]
    kept = record[
        "kept_layers"
    ]  # [0, 2, 3]: student layer 0 feeds teacher layer 2, whose input is layer 1's output
    assert trainer.layer_pairs == [(0, kept[1] - 1)]
    trainer.train()
