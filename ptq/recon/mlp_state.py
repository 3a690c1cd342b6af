"""Which MLPs MLP reconstruction changes, how it changes them (GELU -> ReLU, new fc1 / fc2 weights), and how the
change is saved with the quantizer parameters and restored from them.

The change is a model transform the saved parameter file carries itself (`ptq.quant.params.register_saved_state`):
tensors `mlp_recon.<mlp>.<fc1|fc2>.<weight|bias>` and the metadata {mlp name: "relu"}, so `quantizer.load=` on a
freshly built model rebuilds the ReLU MLPs with their distilled weights before the quantizers act. The weights at
the end of the stage (before any later stage, e.g. RepQ-ViT's LayerNorm reparameterization, folds into them) are
kept on the model (`FLOAT_ATTR`): they are the modified float model the report evaluates (`modified_float`).
"""
from __future__ import annotations

import copy

import torch
from timm.layers import Mlp
from torch import nn

from ptq.errors import PTQError
from ptq.quant.params import register_saved_state

MARK = "_ptq_mlp_recon"          # set on an Mlp whose GELU this stage replaced
FLOAT_ATTR = "_ptq_mlp_float"    # on the model: {tensor name: distilled value} at the end of the stage
ORIGINAL_ATTR = "_ptq_mlp_original"   # on the model: a copy of it before the change (recon.target=original)
TENSORS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
GROUP = "mlp_recon"


def gelu_mlps(model: nn.Module) -> list[tuple[str, Mlp]]:
    """Every transformer MLP (timm's `Mlp`: fc1 -> act -> fc2) whose activation is GELU, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Mlp) and isinstance(m.act, nn.GELU)]


def reconstructed_mlps(model: nn.Module) -> list[tuple[str, Mlp]]:
    """The MLPs MLP reconstruction changed (their GELU is now a ReLU)."""
    return [(n, m) for n, m in model.named_modules() if getattr(m, MARK, False)]


def _tensor(mlp: Mlp, key: str) -> torch.Tensor:
    layer, attr = key.split(".")
    return getattr(getattr(mlp, layer), attr)


@torch.no_grad()
def install(mlp: Mlp, weights: dict[str, torch.Tensor]) -> None:
    """GELU -> ReLU in `mlp` and its fc1 / fc2 weights and biases replaced by `weights` (keys TENSORS)."""
    if not isinstance(mlp.act, nn.GELU):
        raise PTQError(f"MLP reconstruction replaces GELU by ReLU, but this MLP's activation is "
                       f"{type(mlp.act).__name__}; valid: a model whose MLPs use GELU (ViT, DeiT, Swin)")
    for key in TENSORS:
        own, new = _tensor(mlp, key), weights[key]
        if own is None or own.shape != new.shape:
            raise PTQError(f"MLP reconstruction weight {key} has shape {tuple(new.shape)}, the model's "
                           f"{None if own is None else tuple(own.shape)}; valid: weights saved for this model")
        own.copy_(new.to(own.device, own.dtype))
    mlp.act = nn.ReLU()
    setattr(mlp, MARK, True)


def mlp_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """The reconstructed MLPs' current fc1 / fc2 tensors and {mlp name: "relu"} (for the parameter file)."""
    tensors, meta = {}, {}
    for name, mlp in reconstructed_mlps(model):
        for key in TENSORS:
            tensors[f"{GROUP}.{name}.{key}"] = _tensor(mlp, key).detach().float().cpu().contiguous()
        meta[name] = "relu"
    return tensors, meta


def restore_mlp_state(model: nn.Module, tensors: dict[str, torch.Tensor], meta: dict,
                      setting: str | None = None) -> None:
    """Rebuild the reconstructed MLPs of `mlp_state` in a freshly built (GELU) model; `setting` (the run's
    mlp_recon.name, None: unchecked) must match whether the file holds reconstructed MLPs."""
    if setting is not None and (setting != "none") != bool(meta):
        raise PTQError(f"quantizer.load holds {len(meta)} reconstructed MLPs but this run has mlp_recon.name="
                       f"{setting}; valid: the mlp_recon setting the file was saved with")
    snapshot = {}
    for name in meta:
        missing = [k for k in TENSORS if f"{GROUP}.{name}.{k}" not in tensors]
        if missing:
            raise PTQError(f"quantizer.load lacks the key '{GROUP}.{name}.{missing[0]}'; valid: a file saved by "
                           f"this code for this model")
        weights = {k: tensors[f"{GROUP}.{name}.{k}"] for k in TENSORS}
        try:
            mlp = model.get_submodule(name)
        except AttributeError:
            raise PTQError(f"quantizer.load names the MLP {name}, which this model lacks; valid: a file saved "
                           f"for this model") from None
        install(mlp, weights)
        snapshot.update({f"{name}.{k}": v for k, v in weights.items()})
    if meta:
        setattr(model, FLOAT_ATTR, snapshot)


def keep_float(model: nn.Module) -> None:
    """Record the reconstructed MLPs' weights now (the modified float model, before later stages fold into them)."""
    tensors, _ = mlp_state(model)   # a copy: on a CPU float32 model mlp_state's tensors share the parameters' memory,
    #                                  which a later LayerNorm fold changes in place (fc1's weight times r)
    setattr(model, FLOAT_ATTR, {k[len(GROUP) + 1:]: v.clone() for k, v in tensors.items()})


def keep_original(model: nn.Module) -> None:
    """Keep a copy of the model as it is before the change (float: no quantizer is initialized yet) for a
    reconstruction whose targets are the original float model (recon.target=original); held outside the module
    tree, so it is neither a submodule nor in the state dict."""
    object.__setattr__(model, ORIGINAL_ATTR, copy.deepcopy(model))


def original_float(model: nn.Module) -> nn.Module | None:
    """The copy `keep_original` made, or None (no MLP reconstruction kept one)."""
    return model.__dict__.get(ORIGINAL_ATTR)


def modified_float(model: nn.Module, float_model: nn.Module) -> nn.Module | None:
    """`float_model` (a freshly built float model) turned into the float model MLP reconstruction made of
    `model`'s, or None when `model` had no MLP reconstruction."""
    snapshot = getattr(model, FLOAT_ATTR, None)
    if not snapshot:
        return None
    names = sorted({k.rsplit(".", 2)[0] for k in snapshot})
    for name in names:
        install(float_model.get_submodule(name), {k: snapshot[f"{name}.{k}"] for k in TENSORS})
    return float_model


register_saved_state(GROUP, mlp_state, restore_mlp_state)   # kept in quant_params.safetensors
