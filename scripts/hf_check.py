#!/usr/bin/env python3
"""Loads a moefold export with transformers' AutoModelForCausalLM and compares its loss with
moefold's on the same batch.

Input: a folder written by the interop tests when MOEFOLD_HF_CHECK_OUT is set (see
tests/interop/hf_reference_test.cpp): <dir>/hf (the export-hf output) and <dir>/batch.json
({"tokens": [[...]], "labels": [[...]], "loss_mask": [[...]], "moefold_loss": x}).

Usage (on a machine with PyTorch and transformers, e.g. from scripts/gpu_check.sh):
  MOEFOLD_HF_CHECK_OUT=/tmp/hf_check build/tests/interop/interop_tests \
      --gtest_filter='HfReference.*'
  python3 scripts/hf_check.py /tmp/hf_check/mixtral   (and /tmp/hf_check/qwen3_moe)
Exit status 0 when |transformers loss - moefold loss| <= 1e-4 (float32 on both sides).
"""
import json
import sys


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError as error:
        print(f"hf_check: skipped: {error}")
        return 0
    root = sys.argv[1]
    with open(f"{root}/batch.json") as f:
        batch = json.load(f)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(f"{root}/hf", torch_dtype=torch.float32)
    model = model.to(device).eval()
    tokens = torch.tensor(batch["tokens"], device=device)
    labels = torch.tensor(batch["labels"], device=device)
    mask = torch.tensor(batch["loss_mask"], device=device, dtype=torch.float64)
    with torch.no_grad():
        logits = model(input_ids=tokens).logits.double()
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    loss = float((losses * mask.reshape(-1)).sum() / mask.sum())
    want = float(batch["moefold_loss"])
    ok = abs(loss - want) <= 1e-4
    print(f"hf_check: transformers {loss:.7f} | moefold {want:.7f} | "
          f"{'equal' if ok else 'DIFFERENT'} ({model.config.model_type}, {device})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
