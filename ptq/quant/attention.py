"""Attention blocks routed through explicit, quantizable matmuls.

timm's fused attention (scaled_dot_product_attention) hides q @ k^T, the softmax and attn @ v; these
replacements compute them explicitly with `QMatMul` operands, reusing the original submodules and weights.
ViT/DeiT apply the attention scale after q @ k^T (so q and k are quantized unscaled); Swin scales q first (so the
scaled q is what is quantized), then adds the relative-position bias and the shift mask in float.
"""
from __future__ import annotations

import torch
from timm.layers.attention import maybe_add_mask, resolve_self_attn_mask
from torch import nn

from ptq.quant.modules import QMatMul


class QuantViTAttention(nn.Module):
    """Replacement of timm.layers.Attention (ViT, DeiT)."""

    def __init__(self, attn: nn.Module, qkv: nn.Module, proj: nn.Module, matmul1: QMatMul, matmul2: QMatMul):
        super().__init__()
        # registration order = the search's module order: qkv, proj, q @ k^T, attn @ v
        self.qkv, self.proj, self.matmul1, self.matmul2 = qkv, proj, matmul1, matmul2
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale
        self.attn_dim = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.q_norm, self.k_norm, self.norm = attn.q_norm, attn.k_norm, getattr(attn, "norm", nn.Identity())
        self.attn_drop, self.proj_drop = attn.attn_drop, attn.proj_drop
        self.gate = getattr(attn, "gate", None)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        b, n, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        attn = self.matmul1(q, k.transpose(-2, -1)) * self.scale
        attn = maybe_add_mask(attn, resolve_self_attn_mask(n, attn, attn_mask, is_causal))
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = self.matmul2(attn, v)
        x = self.norm(x.transpose(1, 2).reshape(b, n, self.attn_dim))
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


class QuantWindowAttention(nn.Module):
    """Replacement of timm's Swin WindowAttention."""

    def __init__(self, attn: nn.Module, qkv: nn.Module, proj: nn.Module, matmul1: QMatMul, matmul2: QMatMul):
        super().__init__()
        self.qkv, self.proj, self.matmul1, self.matmul2 = qkv, proj, matmul1, matmul2
        self.num_heads, self.scale = attn.num_heads, attn.scale
        self.window_size, self.window_area = attn.window_size, attn.window_area
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index, persistent=False)
        self.attn_drop, self.proj_drop = attn.attn_drop, attn.proj_drop

    def _get_rel_pos_bias(self) -> torch.Tensor:
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(self.window_area, self.window_area, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b_, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b_, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.matmul1(q * self.scale, k.transpose(-2, -1)) + self._get_rel_pos_bias()
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(-1, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.num_heads,
                                                                                                 n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = self.matmul2(attn, v).transpose(1, 2).reshape(b_, n, -1)
        return self.proj_drop(self.proj(x))
