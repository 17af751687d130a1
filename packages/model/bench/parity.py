"""PyTorch side of the parity check (run by parity.ts with /usr/bin/python3):
    /usr/bin/python3 parity.py <dir>
<dir> holds config.json, model.safetensors (written by moa), batch.json {ids, targets} and
ours.safetensors (moa's logits and gradients, gradients in the file layout). Loads the weights
into torch_gpt.GPT with load_state_dict(strict=True), runs the same batch forward and backward,
and prints one JSON line with the differences."""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt import GPT, Config  # noqa: E402


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} has dtype {info['dtype']}, expected F32")
        s, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(raw[base + s:base + e]), dtype=torch.float32)
        out[name] = t.reshape(info["shape"]) if info["shape"] else t.reshape(())
    return out


def main(d):
    torch.set_num_threads(1)
    cfg = json.load(open(os.path.join(d, "config.json")))
    model = GPT(Config(**cfg))
    weights = read_safetensors(os.path.join(d, "model.safetensors"))
    model.load_state_dict(weights, strict=True)
    batch = json.load(open(os.path.join(d, "batch.json")))
    ids = torch.tensor(batch["ids"], dtype=torch.long)
    targets = torch.tensor(batch["targets"], dtype=torch.long)
    logits, loss = model(ids, targets)
    loss.backward()
    ours = read_safetensors(os.path.join(d, "ours.safetensors"))
    our_logits = ours["logits"].reshape(logits.shape)
    grads = {n: p.grad for n, p in model.named_parameters()}
    max_g, max_gabs, worst = 0.0, 0.0, ""
    for n, g in grads.items():
        og = ours.get("grad." + n)
        if og is None:
            raise SystemExit(f"ours.safetensors has no gradient for {n}")
        diff = (og.reshape(g.shape) - g).abs().max().item()
        if diff > max_g:
            max_g, worst = diff, n
        max_gabs = max(max_gabs, g.abs().max().item())
    print(json.dumps({
        "torch": torch.__version__,
        "maxLogitDiff": (our_logits - logits.detach()).abs().max().item(),
        "torchLoss": loss.item(),
        "loss": ours["loss"].item(),
        "lossDiff": abs(ours["loss"].item() - loss.item()),
        "maxGradDiff": max_g,
        "worstGrad": worst,
        "maxGradRel": max_g / max(max_gabs, 1e-12),
        "gradCount": len(grads),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
