"""TRL conveniences: a teacher by name, peft_config=, push_to_hub with hf-minitron's card, predict() logits."""

from __future__ import annotations

import json

import pytest
import torch
from distill_worker import teacher_and_student, tiny_args, token_dataset

from hf_minitron import DistillationTrainer


def test_teacher_by_path_with_init_kwargs(tmp_path):
    teacher, student = teacher_and_student(num_hidden_layers=2)
    teacher.save_pretrained(tmp_path / "teacher")
    args = tiny_args(tmp_path / "out", teacher_model_init_kwargs='{"dtype": "bfloat16"}', max_steps=1)
    trainer = DistillationTrainer(
        model=student, teacher_model=str(tmp_path / "teacher"), args=args, train_dataset=token_dataset(4)
    )
    loaded = trainer.accelerator.unwrap_model(trainer.teacher_model)
    assert loaded.dtype == torch.bfloat16 and trainer.teacher_name == str(tmp_path / "teacher")
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded.lm_head.weight.float(), teacher.lm_head.weight.bfloat16().float())
    trainer.train()
    with pytest.raises(ValueError, match="torch dtype name"):
        DistillationTrainer(model=student, teacher_model=str(tmp_path / "teacher"),
                            args=tiny_args(tmp_path, teacher_model_init_kwargs={"dtype": "float33"}))  # fmt: skip


def test_peft_config_trains_only_the_adapters(tmp_path):
    from peft import LoraConfig, PeftModel

    teacher, student = teacher_and_student(num_hidden_layers=2)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=tiny_args(tmp_path), train_dataset=token_dataset(8),
        peft_config=lora,
    )  # fmt: skip
    assert isinstance(trainer.model, PeftModel)
    trainer.train()
    merged = trainer.model.merge_and_unload().state_dict()
    changed = {k for k in before if not torch.equal(before[k], merged[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    with pytest.raises(ValueError, match="already a PeftModel"):
        DistillationTrainer(
            model=trainer.model, teacher_model=teacher, args=tiny_args(tmp_path), peft_config=lora
        )
    fresh = teacher_and_student(num_hidden_layers=2)[1]
    with pytest.raises(ValueError, match="lm_head"):
        DistillationTrainer(model=fresh, teacher_model=teacher, args=tiny_args(tmp_path),
                            peft_config=LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))  # fmt: skip
    assert not any(
        "lora" in name for name, _ in fresh.named_modules()
    )  # refused before any adapter was added


def test_push_to_hub_uploads_hf_minitrons_card(tmp_path, monkeypatch):
    import transformers.trainer as hf_trainer

    uploads = []

    class FakeApi:
        def upload_folder(self, folder_path, **kwargs):
            uploads.append(
                {p.name: p.read_bytes() for p in __import__("pathlib").Path(folder_path).iterdir()}
            )

    monkeypatch.setattr(hf_trainer, "hf_api", lambda: FakeApi())
    token = "hf_PushSecretToken0123456789abc"
    teacher, student = teacher_and_student(num_hidden_layers=2, hidden_size=32)
    args = tiny_args(tmp_path / "out", max_steps=2, hub_token=token)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=token_dataset(8)
    )
    trainer.train()
    trainer.hub_model_id = "someone/tiny-distilled"
    trainer.push_to_hub(dataset="someone/corpus")
    (files,) = uploads
    assert "training_args.bin" not in files and not any(token.encode() in b for b in files.values())
    record = json.loads(files["hf_minitron.json"])
    assert record["architecture"]["before"]["hidden_size"] == 64
    assert record["architecture"]["after"]["hidden_size"] == 32
    assert record["distillation"]["tokens"] == 2 * 2 * 16  # steps x batch x seq_len
    assert record["distillation"]["settings"]["distill_loss"] == "forward_kl"
    card = files["README.md"].decode()
    assert "## Distillation" in card and "Tokens: 64" in card and "someone/corpus" in card
    assert "model.safetensors" in files


def test_predict_returns_chunked_logits_only_when_asked(tmp_path):
    teacher, student = teacher_and_student(num_hidden_layers=2)
    data = token_dataset(3, ragged=True)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=tiny_args(tmp_path, per_device_eval_batch_size=2)
    )
    plain = trainer.predict(data)
    assert plain.predictions is None and "test_distill_loss" in plain.metrics
    out = trainer.predict(data, return_logits=True)
    batch = {k: torch.tensor(v) for k, v in data[:].items()}
    with torch.no_grad():
        want = student(**batch).logits
    torch.testing.assert_close(torch.as_tensor(out.predictions), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.as_tensor(out.label_ids), batch["labels"])
    assert out.metrics["test_loss"] == pytest.approx(plain.metrics["test_loss"])
