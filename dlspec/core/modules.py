"""The few modules torch.nn lacks. Only torch is imported here: `dlspec build --emit-python`
copies these classes into the emitted file so it runs without dlspec."""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiHeadAttention(nn.Module):
    """Multi-head (grouped-query) attention on F.scaled_dot_product_attention, which picks flash kernels on CUDA.
    Self-attention projects q, k, v with one fused `qkv` matmul (`q` and `kv` for cross-attention); `rope` rotates
    q and k by position (Llama); `names` renames the projections by role; `bias`: true, false or the roles with one."""

    def __init__(self, dim: int, heads: int, kv_heads: Optional[int] = None, causal: bool = False,
                 dropout: float = 0.0, bias=True, cross: bool = False, kv_dim: Optional[int] = None,
                 rope: Optional[nn.Module] = None, names: Optional[dict] = None):
        super().__init__()
        self.dim, self.heads, self.kv_heads, self.head_dim = dim, heads, kv_heads or heads, dim // heads
        self.kv_width = self.kv_heads * self.head_dim
        self.causal, self.dropout, self.cross = causal, dropout, cross
        self.build(kv_dim or dim, bias, names or {})
        if rope is not None:
            self.rope = rope

    def build(self, source: int, bias, names: dict) -> None:
        """The projections' modules, under their names."""
        if self.cross:
            self.linear(names, "q", self.dim, self.dim, bias)
            self.linear(names, "kv", source, 2 * self.kv_width, bias)
        else:
            self.linear(names, "qkv", self.dim, self.dim + 2 * self.kv_width, bias)
        self.linear(names, "out", self.dim, self.dim, bias)

    def linear(self, names: dict, role: str, n_in: int, n_out: int, bias) -> None:
        has_bias = bias if isinstance(bias, bool) else role in bias
        setattr(self, names.get(role, role), nn.Linear(n_in, n_out, bias=has_bias))

    def forward(self, x: torch.Tensor, memory: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.project(x, memory if memory is not None else x)  # across: keys and values from memory
        S = k.size(1)
        q = q.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, S, hs)
        v = v.view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, S, hs)
        if hasattr(self, "rope"):  # positions 0..T-1 (TorchScript compiles only the branch this module has)
            q, k = self.rope(q), self.rope(k)
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
        return self.output(y)

    def project(self, x: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, T, dim) from x; keys and values (B, S, kv_width) from source (x, or memory)."""
        if hasattr(self, "kv"):  # cross-attention (TorchScript compiles only the branch this module has)
            k, v = self.kv(source).split([self.kv_width, self.kv_width], dim=-1)
            return self.q(x), k, v
        q, k, v = self.qkv(x).split([self.dim, self.kv_width, self.kv_width], dim=-1)
        return q, k, v

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return self.out(y)


class SeparateAttention(MultiHeadAttention):
    """Attention with one Linear each for q, k and v (Hugging Face's BERT and Llama keep them apart)."""

    def build(self, source: int, bias, names: dict) -> None:
        self.linear(names, "q", self.dim, self.dim, bias)
        self.linear(names, "k", source, self.kv_width, bias)
        self.linear(names, "v", source, self.kv_width, bias)
        self.linear(names, "out", self.dim, self.dim, bias)

    def project(self, x: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q(x), self.k(source), self.v(source)


class InProjAttention(MultiHeadAttention):
    """Attention with nn.MultiheadAttention's parameters (`in_proj_weight`, `in_proj_bias`, `out_proj`),
    initialised as it does, so its state dicts (torchvision's ViT) load as they are."""

    def build(self, source: int, bias, names: dict) -> None:
        self.in_proj_weight = nn.Parameter(torch.empty(self.dim + 2 * self.kv_width, self.dim))
        nn.init.xavier_uniform_(self.in_proj_weight)
        in_bias = torch.zeros(self.dim + 2 * self.kv_width) if (bias if isinstance(bias, bool) else "qkv" in bias) else None
        self.register_parameter("in_proj_bias", None if in_bias is None else nn.Parameter(in_bias))
        self.out_proj = nn.Linear(self.dim, self.dim, bias=bias if isinstance(bias, bool) else "out" in bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)

    def project(self, x: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.cross:  # one matmul
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(
                [self.dim, self.kv_width, self.kv_width], dim=-1)
            return q, k, v
        w_q, w_kv = self.in_proj_weight.split([self.dim, 2 * self.kv_width])
        b_q: Optional[torch.Tensor] = None
        b_kv: Optional[torch.Tensor] = None
        if self.in_proj_bias is not None:
            b_q, b_kv = self.in_proj_bias.split([self.dim, 2 * self.kv_width])
        k, v = F.linear(source, w_kv, b_kv).split([self.kv_width, self.kv_width], dim=-1)
        return F.linear(x, w_q, b_q), k, v

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return self.out_proj(y)


class PositionalEmbedding(nn.Module):
    """Adds a learned [max_len, D] position table to (B, T, D)."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.size(1)].to(x.dtype)


class SinusoidalPositions(nn.Module):
    """Adds fixed sinusoids of position to (B, T, D), as the original Transformer does."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
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


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer) in Hugging Face Llama's layout: the rotated part of each head
    (its first `fraction`) is two halves rotated against each other (rotate_half), not interleaved pairs,
    so Llama checkpoints load as they are. Takes (..., T, head_dim) and positions 0..T-1, or given ones."""

    def __init__(self, head_dim: int, theta: float = 10000.0, fraction: float = 1.0, scaling: Optional[dict] = None):
        super().__init__()
        self.rotated = int(head_dim * fraction) // 2 * 2
        inv_freq = 1.0 / theta ** (torch.arange(0, self.rotated, 2, dtype=torch.int64).float() / self.rotated)
        if scaling is not None:
            inv_freq = self.scaled(inv_freq, scaling)
        # not persistent: a function of the attributes, as in Hugging Face's checkpoints
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @staticmethod
    def scaled(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
        """Longer contexts from the same weights: `linear` divides every frequency by `factor` (position
        interpolation); `llama3` divides only the low ones, blending in between (Llama 3.1)."""
        factor = scaling["factor"]
        if scaling["kind"] == "linear":
            return inv_freq / factor
        low, high, context = scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["original_context"]
        wavelength = 2 * math.pi / inv_freq
        scaled = torch.where(wavelength > context / low, inv_freq / factor, inv_freq)
        smooth = (context / wavelength - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelength >= context / high) & (wavelength <= context / low)
        return torch.where(medium, blended, scaled)

    def forward(self, x: torch.Tensor, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        if positions is None:
            positions = torch.arange(x.size(-2), device=x.device)
        freqs = positions.float()[..., None] * self.inv_freq  # (T, rot/2) or (B, T, rot/2)
        angles = torch.cat([freqs, freqs], dim=-1)
        if angles.dim() == 3 and x.dim() == 4:
            angles = angles[:, None]  # (B, 1, T, rot): the same positions for every head
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        rot, rest = x[..., : self.rotated], x[..., self.rotated:]
        half = self.rotated // 2
        rotated = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
        return torch.cat([rot * cos + rotated * sin, rest], dim=-1)


class Recurrent(nn.RNNBase):
    """nn.LSTM or nn.GRU (mode 'LSTM' or 'GRU'; batch first, the same parameters) giving one output: every
    step's, the last real step's, or the top layer's final state. With a [B, T] padding mask or [B] lengths
    (padding at the end) each sequence runs over its real steps only, in both directions."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, bias: bool = True, output: str = "sequence"):
        super().__init__(mode, input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=True,
                         dropout=dropout, bidirectional=bidirectional)
        self.output = output

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,  # type: ignore[override]
                lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is not None:
            lengths = mask.to(torch.int64).sum(1)
        if lengths is not None and self.bidirectional:
            seq = self._by_direction(x, lengths)
        else:  # padding comes last, so it changes no real step of a forward-only pass
            directions = 2 if self.bidirectional else 1
            seq = self._run(x, self._flat_weights, self.num_layers * directions, self.num_layers, self.bidirectional)
        if lengths is not None:
            real = torch.arange(seq.size(1), device=seq.device)[None, :] < lengths.to(torch.int64)[:, None]
            seq = seq * real[:, :, None].to(seq.dtype)  # padded steps give zeros
        if self.output == "sequence":
            return seq  # (B, T, D*hidden)
        if lengths is None:
            last = seq[:, -1]
        else:
            index = (lengths.to(torch.int64) - 1).view(-1, 1, 1).expand(-1, 1, seq.size(2))
            last = seq.gather(1, index).squeeze(1)  # (B, D*hidden): each sequence's last real step
        if self.output == "last" or not self.bidirectional:
            return last  # one direction: the top layer's final state is its last real step
        return torch.cat([last[:, : self.hidden_size], seq[:, 0, self.hidden_size:]], dim=-1)  # backward ends at 0

    def _run(self, x: torch.Tensor, weights: list[torch.Tensor], states: int, layers: int,
             bidirectional: bool) -> torch.Tensor:
        h = torch.zeros(states, x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
        if self.mode == "LSTM":
            return torch.lstm(x, [h, h], weights, self.bias, layers, float(self.dropout), self.training,
                              bidirectional, True)[0]
        return torch.gru(x, h, weights, self.bias, layers, float(self.dropout), self.training, bidirectional, True)[0]

    def _by_direction(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Layer by layer, the backward pass over each sequence reversed within its length."""
        steps = torch.arange(x.size(1), device=x.device)[None, :]
        n = lengths.to(torch.int64)[:, None]
        order = torch.where(steps < n, n - 1 - steps, steps)[:, :, None]  # (B, T, 1): reverses the real steps
        per = 4 if self.bias else 2
        for layer in range(self.num_layers):
            ahead = self._run(x, self._flat_weights[2 * layer * per: (2 * layer + 1) * per], 1, 1, False)
            flipped = x.gather(1, order.expand(-1, -1, x.size(2)))
            back = self._run(flipped, self._flat_weights[(2 * layer + 1) * per: (2 * layer + 2) * per], 1, 1, False)
            x = torch.cat([ahead, back.gather(1, order.expand(-1, -1, back.size(2)))], dim=-1)
            if layer < self.num_layers - 1:
                x = F.dropout(x, float(self.dropout), self.training)
        return x
