#!/usr/bin/env python3
"""The model of configs/gpu_bench.yaml written independently in PyTorch eager, for a tokens/s
comparison on the same GPU (scripts/gpu_check.sh). Decoder of pre-norm layers: RMSNorm,
causal self-attention with RoPE (scaled_dot_product_attention), RMSNorm, MoE (softmax router,
top-k routed SwiGLU experts plus a shared SwiGLU expert); final RMSNorm, untied LM head,
cross-entropy; AdamW. Random tokens (speed only). Prints one JSON line.

  python3 scripts/torch_moe_bench.py --steps 6 [--accumulate 8] [--dtype float32|bfloat16]
      [--hidden 2048 ...]
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):  # x (B, heads, S, d): rotate the halves
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x, cos, sin):
        B, S, H = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(o.transpose(1, 2).reshape(B, S, H))


class SwiGLU(nn.Module):
    def __init__(self, hidden, ffn):
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * ffn, bias=False)
        self.down = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class MoE(nn.Module):
    def __init__(self, hidden, ffn, experts, topk, shared_ffn):
        super().__init__()
        self.topk = topk
        self.router = nn.Linear(hidden, experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(hidden, ffn) for _ in range(experts))
        self.shared = SwiGLU(hidden, shared_ffn)

    def forward(self, x):
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        probs = F.softmax(self.router(tokens).float(), dim=-1)
        weights, chosen = probs.topk(self.topk, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(tokens.dtype)
        out = self.shared(tokens)
        flat_expert = chosen.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        counts = torch.bincount(flat_expert, minlength=len(self.experts)).tolist()
        token_of = order // self.topk
        routed = tokens[token_of]
        results = torch.empty_like(routed)
        start = 0
        for e, count in enumerate(counts):
            if count:
                results[start:start + count] = self.experts[e](routed[start:start + count])
            start += count
        results = results * weights.reshape(-1)[order].unsqueeze(-1)
        out = out.index_add(0, token_of, results)
        return out.view(shape)


class Layer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(a.hidden), RMSNorm(a.hidden)
        self.attention = Attention(a.hidden, a.heads)
        self.moe = MoE(a.hidden, a.expert_ffn, a.experts, a.topk, a.shared_ffn)

    def forward(self, x, cos, sin):
        x = x + self.attention(self.norm1(x), cos, sin)
        return x + self.moe(self.norm2(x))


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList(Layer(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.hidden)
        self.head = nn.Linear(a.hidden, a.vocab, bias=False)

    def forward(self, tokens, cos, sin):
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.head(self.norm(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--topk", type=int, default=2)
    p.add_argument("--expert-ffn", type=int, default=1024)
    p.add_argument("--shared-ffn", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--accumulate", type=int, default=1,
                   help="micro-batches per optimizer step (gpu_bench.yaml's global/micro batch)")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 as moefold computes it
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = Model(a).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    d = a.hidden // a.heads
    inv_freq = 10000.0 ** (-torch.arange(0, d // 2, device=device, dtype=torch.float64) * 2 / d)
    angles = torch.arange(a.seq, device=device, dtype=torch.float64)[:, None] * inv_freq
    cos, sin = angles.cos().float(), angles.sin().float()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.dtype == "bfloat16")
    times, losses = [], []
    for step in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(a.accumulate):
            tokens = torch.randint(0, a.vocab, (a.batch, a.seq + 1), device=device)
            with autocast:
                logits = model(tokens[:, :-1], cos, sin)
                loss = F.cross_entropy(logits.float().view(-1, a.vocab),
                                       tokens[:, 1:].reshape(-1)) / a.accumulate
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= a.warmup:
            times.append(time.perf_counter() - start)
            losses.append(loss.item() * a.accumulate)
    params = sum(p.numel() for p in model.parameters())
    step_s = sum(times) / len(times)
    print(json.dumps({
        "framework": f"pytorch {torch.__version__} eager", "dtype": a.dtype,
        "device": torch.cuda.get_device_name(), "parameters": params,
        "tokens_per_s": a.accumulate * a.batch * a.seq / step_s, "step_seconds": step_s,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "losses": [round(x, 4) for x in losses]}))


if __name__ == "__main__":
    main()
