"""The moa GPT in PyTorch, nanoGPT style: exactly the model contract's architecture and
parameter names, so `load_state_dict` takes a moa `model.safetensors` as it is.

Pre-norm blocks: x += o_proj(attn(ln_1(x))); x += fc_out(gelu(fc_in(ln_2(x)))); ln_f; logits =
x @ wte.T (tied) or lm_head. Separate q/k/v projections, GELU x*sigmoid(1.702x), LayerNorm or
RMSNorm with eps 1e-5, causal softmax attention scaled by 1/sqrt(head_dim), learned positions or
RoPE (HF Llama rotate-half, base 10000).

Also the PyTorch side of the benchmark (`bench`) and the peak matmul rate (`peak`):
    /usr/bin/python3 torch_gpt.py bench '<json: {configs:[...], threads:n, steps:n}>'
    /usr/bin/python3 torch_gpt.py peak '<json: {threads:n}>'
Run it with Debian's /usr/bin/python3 (python3-torch), not a pyenv python.
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Config:
    def __init__(self, **kw):
        self.vocabSize = kw["vocabSize"]
        self.contextLength = kw["contextLength"]
        self.dModel = kw["dModel"]
        self.nLayers = kw["nLayers"]
        self.nHeads = kw["nHeads"]
        self.mlpRatio = kw.get("mlpRatio", 4)
        self.norm = kw.get("norm", "layernorm")
        self.position = kw.get("position", "learned")
        self.dropout = kw.get("dropout", 0.0)
        self.tiedEmbeddings = kw.get("tiedEmbeddings", True)
        self.bias = kw.get("bias", True)


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(c):
    return RMSNorm(c.dModel) if c.norm == "rmsnorm" else nn.LayerNorm(c.dModel, eps=1e-5)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        d = c.dModel
        self.q_proj = nn.Linear(d, d, bias=c.bias)
        self.k_proj = nn.Linear(d, d, bias=c.bias)
        self.v_proj = nn.Linear(d, d, bias=c.bias)
        self.o_proj = nn.Linear(d, d, bias=c.bias)
        self.register_buffer("mask", torch.tril(torch.ones(c.contextLength, c.contextLength, dtype=torch.bool)), persistent=False)

    def forward(self, x, rope=None):
        B, T, C = x.shape
        nh = self.c.nHeads
        hs = C // nh
        q = self.q_proj(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, nh, hs).transpose(1, 2)
        v = self.v_proj(x).view(B, T, nh, hs).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, T)
        att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc_in = nn.Linear(c.dModel, c.mlpRatio * c.dModel, bias=c.bias)
        self.fc_out = nn.Linear(c.mlpRatio * c.dModel, c.dModel, bias=c.bias)

    def forward(self, x):
        u = self.fc_in(x)
        return self.fc_out(u * torch.sigmoid(1.702 * u))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = make_norm(c)
        self.attn = Attention(c)
        self.ln_2 = make_norm(c)
        self.mlp = MLP(c)

    def forward(self, x, rope=None):
        x = x + self.attn(self.ln_1(x), rope)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wte = nn.Embedding(c.vocabSize, c.dModel)
        if c.position == "learned":
            self.wpe = nn.Embedding(c.contextLength, c.dModel)
        self.h = nn.ModuleList([Block(c) for _ in range(c.nLayers)])
        self.ln_f = make_norm(c)
        if not c.tiedEmbeddings:
            self.lm_head = nn.Linear(c.dModel, c.vocabSize, bias=False)
        self.apply(self._init)
        for n, p in self.named_parameters():
            if n.endswith("o_proj.weight") or n.endswith("fc_out.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.nLayers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def rope(self, T):
        hs = self.c.dModel // self.c.nHeads
        inv = 1.0 / (10000 ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs))
        f = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        emb = torch.cat((f, f), dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, ids, targets=None):
        B, T = ids.shape
        x = self.wte(ids)
        rope = None
        if self.c.position == "learned":
            x = x + self.wpe(torch.arange(T))
        else:
            rope = self.rope(T)
        for block in self.h:
            x = block(x, rope)
        x = self.ln_f(x)
        logits = x @ self.wte.weight.T if self.c.tiedEmbeddings else self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


def blas_info():
    cfg = torch.__config__.show()
    blas = [l.strip() for l in cfg.splitlines() if "BLAS" in l.upper()]
    try:
        import ctypes, re
        maps = open("/proc/self/maps").read()
        libs = sorted(set(re.findall(r"(/\S*(?:blas|gomp)\S*\.so[\.\d]*)", maps)))
    except Exception:
        libs = []
    return {"torch": torch.__version__, "config": blas, "loaded": libs, "threads": torch.get_num_threads()}


def bench(spec):
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    out = []
    spec.setdefault("warmup", 2)
    for cfgd in spec["configs"]:
        c = Config(**cfgd)
        model = GPT(c)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        B, T = cfgd["batch"], c.contextLength
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, c.vocabSize, (B, T + 1), generator=g)
        x, y = ids[:, :-1], ids[:, 1:]
        times, cpu = [], []
        for i in range(spec.get("warmup", 3) + spec["steps"]):
            t0 = time.perf_counter()
            c0 = time.process_time()
            _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        times = sorted(times[spec.get("warmup", 3):])
        cpu = sorted(cpu[spec.get("warmup", 3):])
        med = times[len(times) // 2]
        cmed = cpu[len(cpu) // 2]
        out.append({"name": cfgd["name"], "params": sum(p.numel() for p in model.parameters()),
                    "stepMs": med * 1000, "tokensPerSec": B * T / med,
                    "bestStepMs": times[0] * 1000, "tokensPerSecBest": B * T / times[0],
                    "cpuMsPerStep": cmed * 1000, "tokensPerCpuSec": B * T / cmed})
    return out


def peak(spec):
    """Best matmul rate (GFLOP/s) of numpy (else torch.mm) at 1024², float32."""
    n = 1024
    try:
        import numpy as np  # threads: the caller sets OPENBLAS_NUM_THREADS / OMP_NUM_THREADS
        a = np.random.rand(n, n).astype(np.float32)
        b = np.random.rand(n, n).astype(np.float32)
        f = lambda: a @ b
        src = "numpy " + np.__version__
    except Exception:
        torch.set_num_threads(spec["threads"])
        a = torch.rand(n, n)
        b = torch.rand(n, n)
        f = lambda: torch.mm(a, b)
        src = "torch.mm"
    f()
    best = 1e9
    for _ in range(10):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return {"gflops": 2 * n ** 3 / best / 1e9, "source": src}


if __name__ == "__main__":
    mode = sys.argv[1]
    spec = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    if mode == "bench":
        torch.set_num_threads(spec["threads"])
        print(json.dumps({"blas": blas_info(), "results": bench(spec)}))
    elif mode == "peak":
        print(json.dumps(peak(spec)))
    elif mode == "info":
        print(json.dumps(blas_info()))
    else:
        raise SystemExit(f"unknown mode {mode}: use bench, peak or info")
