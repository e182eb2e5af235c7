"""The few modules torch.nn lacks. Only torch is imported here: `dlspec build --emit-python`
copies these classes into the emitted file so it runs without dlspec."""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiHeadAttention(nn.Module):
    """Multi-head (grouped-query) attention on F.scaled_dot_product_attention, so CUDA picks
    flash or memory-efficient kernels. Self-attention projects q, k, v with one fused matmul."""

    def __init__(self, dim: int, heads: int, kv_heads: Optional[int] = None, causal: bool = False,
                 dropout: float = 0.0, bias: bool = True, cross: bool = False, kv_dim: Optional[int] = None):
        super().__init__()
        self.heads = heads
        self.kv_heads = kv_heads or heads
        self.head_dim = dim // heads
        self.kv_width = self.kv_heads * self.head_dim
        self.dim = dim
        self.causal = causal
        self.dropout = dropout
        if cross:
            self.q = nn.Linear(dim, dim, bias=bias)
            self.kv = nn.Linear(kv_dim or dim, 2 * self.kv_width, bias=bias)
        else:
            self.qkv = nn.Linear(dim, dim + 2 * self.kv_width, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, memory: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, T, C = x.shape
        if hasattr(self, "q"):  # cross-attention (TorchScript compiles only the branch this module has)
            assert memory is not None
            q = self.q(x)
            k, v = self.kv(memory).split([self.kv_width, self.kv_width], dim=-1)
        else:
            q, k, v = self.qkv(x).split([self.dim, self.kv_width, self.kv_width], dim=-1)
        S = k.size(1)
        q = q.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, S, hs)
        v = v.view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, S, hs)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)  # (B, nh, S, hs)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        attn_mask: Optional[torch.Tensor] = None
        if mask is not None:
            attn_mask = mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, S): true = attend
            if self.causal:
                attn_mask = attn_mask & torch.ones(T, S, dtype=torch.bool, device=x.device).tril()
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=self.causal and mask is None)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.out(y)


class PositionalEmbedding(nn.Module):
    """Adds position embeddings to (B, T, D): a learned [max_len, D] table or fixed sinusoids."""

    def __init__(self, max_len: int, dim: int, kind: str = "learned"):
        super().__init__()
        if kind == "learned":
            self.weight = nn.Parameter(torch.empty(max_len, dim))
            nn.init.normal_(self.weight)
        else:
            position = torch.arange(max_len).unsqueeze(1)
            freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
            table = torch.zeros(max_len, dim)
            table[:, 0::2] = torch.sin(position * freq)
            table[:, 1::2] = torch.cos(position * freq[: dim // 2])
            # not persistent: it is a function of the shape, not state worth saving
            self.register_buffer("weight", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.size(1)].to(x.dtype)


class ClassToken(nn.Module):
    """Prepends a learned token to (B, T, D), giving (B, T + 1, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.token.expand(x.size(0), -1, -1).to(x.dtype), x], dim=1)
