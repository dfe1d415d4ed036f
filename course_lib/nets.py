"""The networks of the course: an MLP for 2-D points and a small U-Net for 28x28 images.

They know nothing about diffusion. Each maps an input x, a per-sample real-valued "time" t
and, optionally, a class label y to an output of the shape of x:

    net(x, t, y=None) -> same shape as x

Diffusion (eps_pred = net(xt, t)), score models and VAEs elsewhere in `course_lib` decide what
the output means and how t is scaled.

Class labels follow one convention in both networks: a learned embedding table with
``num_classes + 1`` rows whose last row is the "null" (no label) token. It is used where
``y is None`` and where ``y == -1``, so classifier-free guidance (Ho & Salimans 2022) trains with
condition dropout by setting dropped labels to -1 and samples the unconditional model with
``y=None``.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_in_range, check_positive_int, check_tensor

NULL_LABEL = -1  # the label that means "no label"; mapped to the last embedding row


# ----------------------------------------------------------------------------------------------
# Time embedding and the (t, y) inputs
# ----------------------------------------------------------------------------------------------

def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of a per-sample time t.

    With half = dim / 2 and frequencies w_k = max_period^(-k / half), k = 0..half-1,

        emb(t) = [sin(w_0 t), ..., sin(w_{half-1} t), cos(w_0 t), ..., cos(w_{half-1} t)].

    This is the Transformer position encoding PE(pos, 2k) = sin(pos / 10000^(2k/d)),
    PE(pos, 2k+1) = cos(...) (Vaswani et al. 2017, Sec. 3.5) with the sines and cosines
    concatenated instead of interleaved, as DDPM does for its time step (Ho et al. 2020,
    Appendix B). The fastest feature turns once per 2*pi units of t, the slowest once per
    2*pi*max_period units, so t should span a range of about 1..1000: integer steps 1..T can be
    passed as they are; continuous t in [0, 1] should be scaled by the caller (e.g. by 1000).

    Args:
        t: (B,) times, float or integer dtype.
        dim: number of features, even.
        max_period: the longest period (in units of t) of the features.

    Returns:
        (B, dim) tensor; float64 if t is float64, else float32 (so bfloat16 t under autocast
        does not lose the resolution of t).
    """
    check_tensor("t", t, ndim=1)
    check_positive_int("dim", dim)
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    check_in_range("max_period", max_period, 0.0, math.inf, low_open=True, high_open=True)
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=dtype)                    # (half,)
    freqs = torch.exp(-math.log(max_period) * k / half)                      # (half,)
    angles = t.to(dtype)[:, None] * freqs[None, :]                           # (B, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)          # (B, dim)


def _time_vector(t, batch: int, device: torch.device) -> torch.Tensor:
    """t as a (B,) float tensor: a Python number or 0-d tensor is broadcast to the batch."""
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        return torch.full((batch,), float(t), device=device)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a number or a torch.Tensor, got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"t must be a real-valued tensor, got dtype {t.dtype}")
    if t.ndim == 0:
        return t.to(device).expand(batch)
    if t.ndim != 1 or t.shape[0] != batch:
        raise ValueError(f"t must be a scalar or have shape ({batch},) to match the batch of x, "
                         f"got shape {tuple(t.shape)}")
    return t.to(device)


def _label_index(y, batch: int, num_classes: int | None, device: torch.device) -> torch.Tensor | None:
    """Row of the class table for each sample: y itself, or num_classes (null) where y is None / -1."""
    if num_classes is None:
        if y is not None:
            raise ValueError("y was given, but this network is unconditional (num_classes=None)")
        return None
    if y is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    check_tensor("y", y, ndim=1)
    if y.dtype.is_floating_point or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must be an integer (long) tensor of labels, got dtype {y.dtype}")
    if y.shape[0] != batch:
        raise ValueError(f"y must have shape ({batch},) to match the batch of x, got {tuple(y.shape)}")
    if y.numel() and bool(((y < NULL_LABEL) | (y >= num_classes)).any()):
        raise ValueError(f"y must hold labels in 0..{num_classes - 1}, or -1 for 'no label'; "
                         f"got values in {int(y.min())}..{int(y.max())}")
    y = y.to(device=device, dtype=torch.long)
    return torch.where(y == NULL_LABEL, torch.full_like(y, num_classes), y)  # (B,)


class ConditionEmbedding(nn.Module):
    """The conditioning vector c(t, y) fed to every block of a network.

        c(t, y) = W2 SiLU(W1 emb(t) + b1) + b2  [+ E[y]]

    with emb(t) the sinusoidal features (`sinusoidal_embedding`) and E a learned table of
    num_classes + 1 rows, the last the null token used where y is None or y == -1.
    This is the time MLP of DDPM (Ho et al. 2020, Appendix B) plus the class embedding of
    classifier-free guidance (Ho & Salimans 2022).
    """

    def __init__(self, emb_dim: int, out_dim: int, num_classes: int | None = None):
        super().__init__()
        check_positive_int("emb_dim", emb_dim)
        if emb_dim % 2:
            raise ValueError(f"emb_dim must be even, got {emb_dim}")
        check_positive_int("out_dim", out_dim)
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        self.emb_dim, self.num_classes = emb_dim, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.class_emb = None if num_classes is None else nn.Embedding(num_classes + 1, out_dim)

    def forward(self, t: torch.Tensor, y_index: torch.Tensor | None) -> torch.Tensor:
        """t (B,) float, y_index (B,) rows of the class table or None -> (B, out_dim)."""
        c = self.time_mlp(sinusoidal_embedding(t, self.emb_dim))  # (B, out_dim)
        if self.class_emb is not None:
            c = c + self.class_emb(y_index)
        return c


# ----------------------------------------------------------------------------------------------
# MLP for points in R^D
# ----------------------------------------------------------------------------------------------

class MLP(nn.Module):
    """A time- (and class-) conditioned MLP for points x in R^dim.

        h_0 = x,   h_i = SiLU(W_i h_{i-1} + b_i + c(t, y)),  i = 1..depth,   out = W_out h_depth

    where c(t, y) (B, hidden) is the conditioning vector of `ConditionEmbedding`: time (and class)
    shift every hidden layer, as DDPM adds its time embedding in every residual block (Ho et al.
    2020, Appendix B). One shared shift keeps the net cheap (a per-layer projection of c costs
    about 1.6x the time per step for no visible gain on the 2-D toys).

    Args:
        dim: size D of a point.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        emb_dim: number of sinusoidal time features.
        num_classes: if set, labels y in 0..num_classes-1 condition the net. The class table has
            num_classes + 1 rows; the last is the null token used where y is None or y == -1
            (condition dropout for classifier-free guidance).
        out_dim: size of the output (default dim; e.g. the number of classes for a noise-aware
            classifier p(y | x_t, t) whose logits are the output).

    `forward(x, t, y=None)`: x (B, dim); t (B,) or a number / 0-d tensor broadcast to the batch,
    passed to the sinusoidal embedding unscaled (scale continuous t in [0, 1] by about 1000);
    y (B,) long or None. Returns (B, out_dim).
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, emb_dim: int = 64,
                 num_classes: int | None = None, out_dim: int | None = None):
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth), ("out_dim", out_dim)):
            check_positive_int(name, value)
        self.dim, self.hidden, self.depth, self.num_classes = dim, hidden, depth, num_classes
        self.cond = ConditionEmbedding(emb_dim, hidden, num_classes)
        widths = [dim] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("x", x, ndim=2, last_dim=self.dim, floating=True)
        B = x.shape[0]
        c = self.cond(_time_vector(t, B, x.device), _label_index(y, B, self.num_classes, x.device))
        h = x                                                       # (B, dim)
        for layer in self.layers:
            h = F.silu(layer(h) + c)                                # (B, hidden)
        return self.out(h)                                          # (B, out_dim)


# ----------------------------------------------------------------------------------------------
# U-Net for images
# ----------------------------------------------------------------------------------------------

def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (fewer when 8 does not divide the channels)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResBlock(nn.Module):
    """Residual block with the conditioning vector added between its two convolutions.

        h = Conv(SiLU(GN(x))) + Linear(SiLU(c)),   out = skip(x) + Conv(Dropout(SiLU(GN(h))))

    as in the DDPM U-Net (Ho et al. 2020, Appendix B; Wide ResNet blocks with GroupNorm).
    """

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.cond_proj = nn.Linear(cond_dim, out_ch)
        self.norm2, self.conv2 = _group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                        # (B, out, H, W)
        h = h + self.cond_proj(F.silu(c))[:, :, None, None]          # + (B, out, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))          # (B, out, H, W)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels, with a residual connection.

        out = x + W_o softmax(Q K^T / sqrt(C)) V,   Q, K, V = W_qkv GN(x)  (1x1 convs)

    (Vaswani et al. 2017; used at low resolution in the DDPM U-Net, Ho et al. 2020.)
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, C, H * W)        # (B, 3, C, HW)
        q, k, v = qkv.transpose(-1, -2).unbind(1)                    # 3 x (B, HW, C)
        a = F.scaled_dot_product_attention(q, k, v)                  # (B, HW, C)
        a = a.transpose(1, 2).reshape(B, C, H, W)                    # (B, C, H, W)
        return x + self.proj(a)


class UNet(nn.Module):
    """A small U-Net eps/score/x0 network for images, e.g. MNIST (B, 1, 28, 28).

    Resolutions 28 -> 14 -> 7 for channel_mults of length 3 (strided 3x3 conv down,
    nearest-neighbour x2 + 3x3 conv up). At each resolution: num_res_blocks `ResBlock`s on the way
    down, whose outputs are the skip connections, and as many on the way up, each taking the
    upsampled features concatenated with one skip. In the middle (lowest resolution):
    ResBlock, optional `SelfAttention`, ResBlock. The conditioning vector c(t, y) of
    `ConditionEmbedding` enters every ResBlock. The final conv is zero-initialised, so the
    untrained net outputs 0. A slimmed-down DDPM U-Net (Ho et al. 2020, Appendix B).

    Args:
        in_channels: image channels C (also the output channels).
        base_channels: channels at full resolution; level i has base_channels * channel_mults[i].
        channel_mults: one multiplier per resolution; H and W must be divisible by
            2 ** (len(channel_mults) - 1).
        num_res_blocks: ResBlocks per resolution on each side.
        emb_dim: number of sinusoidal time features and width of c(t, y).
        num_classes: if set, labels y in 0..num_classes-1 condition the net; the class table has
            num_classes + 1 rows, the last the null token used where y is None or y == -1.
        attention: put a self-attention block at the lowest resolution.
        dropout: dropout rate inside the ResBlocks.

    `forward(x, t, y=None)`: x (B, C, H, W) float; t (B,) or a number / 0-d tensor broadcast to
    the batch, passed to the sinusoidal embedding unscaled (scale continuous t in [0, 1] by about
    1000); y (B,) long or None. Returns (B, C, H, W). Works with channels_last and autocast.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32,
                 channel_mults: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 emb_dim: int = 128, num_classes: int | None = None, attention: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("base_channels", base_channels),
                            ("num_res_blocks", num_res_blocks)):
            check_positive_int(name, value)
        if not isinstance(channel_mults, (tuple, list)) or len(channel_mults) == 0:
            raise TypeError(f"channel_mults must be a non-empty tuple of ints, got {channel_mults!r}")
        for m in channel_mults:
            check_positive_int("channel_mults entries", m)
        check_in_range("dropout", dropout, 0.0, 1.0, high_open=True)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.factor = 2 ** (len(channel_mults) - 1)
        chans = [base_channels * m for m in channel_mults]
        self.cond = ConditionEmbedding(emb_dim, emb_dim, num_classes)
        self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.down, self.downsample = self._down_path(chans, num_res_blocks, emb_dim, dropout)
        mid = chans[-1]
        self.mid1 = ResBlock(mid, mid, emb_dim, dropout)
        self.attn = SelfAttention(mid) if attention else nn.Identity()
        self.mid2 = ResBlock(mid, mid, emb_dim, dropout)
        self.up, self.upsample = self._up_path(chans, num_res_blocks, emb_dim, dropout)
        self.norm_out = _group_norm(chans[0])
        self.conv_out = nn.Conv2d(chans[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _down_path(chans, n_blocks, cond_dim, dropout):
        """Per level: n_blocks ResBlocks; between levels: a stride-2 conv."""
        down, downsample, prev = nn.ModuleList(), nn.ModuleList(), chans[0]
        for i, ch in enumerate(chans):
            down.append(nn.ModuleList(ResBlock(prev if j == 0 else ch, ch, cond_dim, dropout)
                                      for j in range(n_blocks)))
            prev = ch
            if i < len(chans) - 1:
                downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        return down, downsample

    @staticmethod
    def _up_path(chans, n_blocks, cond_dim, dropout):
        """Per level (lowest first): n_blocks ResBlocks on [h, skip]; then nearest x2 + conv."""
        up, upsample, prev = nn.ModuleList(), nn.ModuleList(), chans[-1]
        for i in reversed(range(len(chans))):
            ch = chans[i]
            up.append(nn.ModuleList(ResBlock((prev if j == 0 else ch) + ch, ch, cond_dim, dropout)
                                    for j in range(n_blocks)))
            prev = ch
            if i > 0:
                upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ch, chans[i - 1], 3, padding=1)))
                prev = chans[i - 1]
        return up, upsample

    def _check_x(self, x: torch.Tensor) -> None:
        check_tensor("x", x, ndim=4, floating=True)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channel(s) (shape (B, {self.in_channels}, "
                             f"H, W)), got shape {tuple(x.shape)}")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"x height and width must be divisible by {self.factor} "
                             f"(e.g. 28x28), got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        self._check_x(x)
        B = x.shape[0]
        c = self.cond(_time_vector(t, B, x.device), _label_index(y, B, self.num_classes, x.device))
        h, skips = self.conv_in(x), []                         # (B, ch0, 28, 28)
        for i, blocks in enumerate(self.down):                 # 28 -> 14 -> 7
            for block in blocks:
                h = block(h, c)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid2(self.attn(self.mid1(h, c)), c)           # (B, ch_last, 7, 7)
        for i, blocks in enumerate(self.up):                   # 7 -> 14 -> 28
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), c)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))         # (B, C, 28, 28)


class ConvClassifier(nn.Module):
    """A small CNN for (B, C, 28, 28) images: logits of p(y | x) or, time-conditioned, of the
    noise-aware p(y | x_t, t) used by classifier guidance (Dhariwal & Nichol 2021, Sec. 4).

        28 -> [conv3x3, GN, SiLU (+ c(t))] x2 -> pool 14 -> same with 2x channels -> pool 7
           -> global average -> Linear(hidden) -> SiLU -> Linear(num_classes)

    `features(x, t)` returns the (B, hidden) penultimate activations (for Frechet distances).

    Args:
        in_channels, num_classes: image channels and number of classes.
        channels: channels at 28x28 (doubled at 14x14).
        hidden: width of the penultimate layer.
        time_conditioned: add c(t) (`ConditionEmbedding`) after every convolution.
        dropout: dropout before the last layer.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: int = 32,
                 hidden: int = 128, time_conditioned: bool = False, emb_dim: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("channels", channels), ("hidden", hidden)):
            check_positive_int(name, value)
        check_in_range("dropout", dropout, 0.0, 1.0, high_open=True)
        widths = [in_channels, channels, channels, 2 * channels, 2 * channels]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(_group_norm(b) for b in widths[1:])
        self.cond = (nn.ModuleList(nn.Linear(emb_dim, b) for b in widths[1:]) if time_conditioned
                     else None)
        self.time = ConditionEmbedding(emb_dim, emb_dim) if time_conditioned else None
        self.fc = nn.Linear(2 * channels, hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor, t=None) -> torch.Tensor:
        check_tensor("x", x, ndim=4, floating=True)
        c = None
        if self.time is not None:
            if t is None:
                raise ValueError("this classifier is time-conditioned: pass t")
            c = F.silu(self.time(_time_vector(t, x.shape[0], x.device), None))   # (B, emb)
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = conv(h)
            if c is not None:
                h = h + self.cond[i](c)[:, :, None, None]
            h = F.silu(norm(h))
            if i in (1, 3):
                h = F.avg_pool2d(h, 2)                               # 28 -> 14 -> 7
        return F.silu(self.fc(h.mean(dim=(2, 3))))                   # (B, hidden)

    def forward(self, x: torch.Tensor, t=None) -> torch.Tensor:
        return self.head(self.dropout(self.features(x, t)))          # (B, num_classes)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters of `model`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
