"""Train an embedded test-bed model and write it as a small safetensors checkpoint plus a JSON record.

    python -m ptq.train model=fmnist_vit          # -> checkpoints/fmnist_vit.safetensors + .json
"""
from __future__ import annotations

import json
import math
import time

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

import ptq.schema  # noqa: F401  (registers the typed config schemas before Hydra composes)
from ptq.data import fashion_mnist as fm
from ptq.env import environment
from ptq.evaluate import evaluate_logits, top1
from ptq.models.checkpoint import save_state_dict
from ptq.models.registry import model_kwargs, resolve_path


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shift by up to 2 pixels (zero padding) and random horizontal flip, on a uint8 batch [B,28,28]."""
    b = x.shape[0]
    pad = F.pad(x, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (b,), generator=gen)
    dy = torch.randint(0, 5, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(28)[None]).clamp(max=31)
    cols = (dx[:, None] + torch.arange(28)[None]).clamp(max=31)
    out = pad[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def train(cfg: DictConfig) -> dict:
    """Train `cfg.model` on Fashion-MNIST and save it; returns the record written beside the checkpoint."""
    import timm

    import ptq.models.testbed  # noqa: F401

    t = cfg.train
    if t.threads:
        torch.set_num_threads(int(t.threads))
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    root = cfg.data.root or fm.default_root()
    tx, ty = fm.load_split(root, "train")
    vx, vy = fm.load_split(root, "test")
    model = timm.create_model(cfg.model.name, **model_kwargs(cfg.model))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n and "token" not in n]
    no_decay = [p for n, p in model.named_parameters()
                if not (p.ndim >= 2 and "pos_embed" not in n and "token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                             {"params": no_decay, "weight_decay": 0}],
                            lr=t.lr)
    steps_per_epoch = math.ceil(len(tx) / t.batch_size)
    total, warm = t.epochs * steps_per_epoch, t.warmup_epochs * steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warm:
            return t.lr * (step + 1) / warm
        p = (step - warm) / max(1, total - warm)
        return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * p))

    start, step = time.time(), 0
    for epoch in range(t.epochs):
        model.train()
        perm = torch.randperm(len(tx), generator=gen)
        loss_sum = 0.0
        for i in range(0, len(tx), t.batch_size):
            idx = perm[i:i + t.batch_size]
            xb = _augment(tx[idx], gen) if t.augment else tx[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = F.cross_entropy(model(fm.normalize(xb)), ty[idx], label_smoothing=t.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            step += 1
        model.eval()
        test_batches = ((fm.normalize(vx[j:j + 500]), vy[j:j + 500]) for j in range(0, len(vx), 500))
        acc = top1(evaluate_logits(model, test_batches, progress=False)[0], vy)
        print(f"epoch {epoch + 1}/{t.epochs}  loss {loss_sum / len(tx):.4f}  test top-1 {acc:.2f}  "
              f"{time.time() - start:.0f}s", flush=True)
    seconds = time.time() - start
    out = resolve_path(str(t.out))
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"model": cfg.model.name, "kwargs": OmegaConf.to_container(cfg.model.kwargs, resolve=True),
              "test_top1": round(acc, 2), "train_seconds": round(seconds, 1),
              "train": OmegaConf.to_container(t, resolve=True), "env": environment("cpu")}
    save_state_dict(model, out, metadata={"model": cfg.model.name, "test_top1": f"{acc:.2f}"})
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB), test top-1 {acc:.2f}, {seconds:.0f}s")
    return record


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from ptq.config_keys import check_known_keys
    from ptq.schema import TrainConfig

    check_known_keys(cfg, TrainConfig)  # `+train.epoch=3` would compose and be ignored
    train(cfg)


if __name__ == "__main__":
    main()
