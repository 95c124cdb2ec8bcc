"""RFClassifier: a pre-norm transformer encoder over FFT-frame tokens, pooled over the real tokens
(mean, or attention from one learned query), with a linear head; optionally a second head on the
whole recording's features (linear, plus an MLP if the config asks), added to the logits. The
attention backend, the norm, the pooling and the recording head are chosen by the config."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rfmodel.attention import build_attention
from rfmodel.config import ModelConfig
from rfmodel.kernels import fast_path
from rfmodel.norms import make_norm
from rfmodel.rope import Rope, RopeCache

# the least spread fit_recording_norm divides by: a thousandth of a dB or of an FFT bin
SCALE_FLOOR = 1e-3


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.down = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if fast_path(x, self.up.weight):
            return self.down(self._gelu_up_cublaslt(x))
        return self.down(nn.functional.gelu(self.up(x)))

    def _gelu_up_cublaslt(self, x: Tensor) -> Tensor:
        """gelu(up(x)) with the GELU in the epilogue of cuBLASLt's matmul (torch's private op
        for that), so the [T, 4*D] hidden activations are written once instead of written, read
        and written again: at the reference size on an H100, latent 9,130 recordings/s against
        7,922 with a fused Triton MLP (docs/experiments/gpu_roofline, session 15). The epilogue
        computes GELU's tanh form, at most 4.7e-4 from the erf form; in bf16 that moves about
        29 % of the rounded activations by one unit in the last place."""
        rows = x.reshape(-1, x.shape[-1])  # [N, D]
        zero_bias = rows.new_zeros(self.up.out_features)
        hidden = torch._addmm_activation(zero_bias, rows, self.up.weight.t(), use_gelu=True)
        return hidden.view(*x.shape[:-1], -1)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.attn = build_attention(cfg)
        self.mlp_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor | None, rope: Rope) -> Tensor:
        if self.training and self.dropout.p > 0:
            # dropout acts on the branch alone, which a fused kernel never writes
            x = x + self.dropout(self.attn(self.attn_norm(x), mask, rope))
            h = self.mlp_norm(x)
        else:
            # the branch, the residual add and mlp_norm, in one pass where the backend can
            # (latent's fast path): neither the branch nor x is written and read back between
            x, h = self.attn.residual_norm(self.attn_norm(x), x, mask, rope, self.mlp_norm)
        return x + self.dropout(self.mlp(h))


class RFClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.n_features, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        # zero: attention pooling starts out as the mean and learns which frames to weigh
        attention_pool = cfg.pool == "attention"
        self.pool_query = nn.Parameter(torch.zeros(cfg.d_model)) if attention_pool else None
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)
        # Beside the transformer, not a token in it: in a CPU A/B the same vector as one more
        # token gained 0.7 points at SNR >= 10 dB, as its own head 7.1 (docs/experiments/
        # recording_features). Zero: a model fine-tuned from weights without the head starts
        # from their predictions.
        self.recording_head = None
        self.recording_mlp = None
        if cfg.recording_head:
            n = cfg.n_recording_features
            self.recording_head = nn.Linear(n, cfg.n_classes)
            nn.init.zeros_(self.recording_head.weight)
            nn.init.zeros_(self.recording_head.bias)
            if cfg.standardises_recording:
                # the identity until rfmodel.train fits them to the training data
                self.register_buffer("recording_shift", torch.zeros(n))
                self.register_buffer("recording_scale", torch.ones(n))
        if cfg.recording_head and cfg.recording_hidden:
            # what the linear head cannot: over a frozen mha, an MLP over both views scored 0.475
            # at 0 dB, a linear layer 0.412 (docs/experiments/band_view). Its output starts at
            # zero, so a fine-tune that adds it starts from the linear head's answers.
            layers: list[nn.Module] = []
            width = cfg.n_recording_features
            for _ in range(cfg.recording_layers):
                layers += [nn.Linear(width, cfg.recording_hidden), nn.GELU()]
                if cfg.recording_dropout:  # only then: older weights keep their module indices
                    layers.append(nn.Dropout(cfg.recording_dropout))
                width = cfg.recording_hidden
            self.recording_mlp = nn.Sequential(*layers, nn.Linear(width, cfg.n_classes))
            nn.init.zeros_(self.recording_mlp[-1].weight)
            nn.init.zeros_(self.recording_mlp[-1].bias)
        self.rope = RopeCache(cfg.rope_dim, cfg.rope_base)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, recording: Tensor | None = None
    ) -> Tensor:
        """x [B, T, F] features, mask [B, T] bool (True = real token; each sequence's real tokens
        first) or None, recording [B, F] the recording's features (only and always with a
        recording head) -> logits [B, C]."""
        return self.add_recording(self.sequence_logits(x, mask), recording)

    def sequence_logits(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The transformer's part of forward: x [B, T, F], mask [B, T] -> logits [B, C] before
        the recording head's. Apart from add_recording so that a GPU can compute the recording's
        features while this runs (rfmodel.iq_logits)."""
        mask = self._check_frames(x, mask)
        if mask is not None:
            # padded frames may hold anything (even NaN); zero them so nothing non-finite can
            # reach a real token through a zero attention weight (0 * NaN = NaN)
            x = x.masked_fill(~mask[..., None], 0.0)
        rope = self.rope(x.shape[1], x.device, x.dtype)
        h = self.embed(x)  # [B, T, D]
        for block in self.blocks:
            h = block(h, mask, rope)
        h = self.norm(h)
        return self.head(self._pool(h, mask))  # [B, C]

    def add_recording(self, logits: Tensor, recording: Tensor | None) -> Tensor:
        """logits [B, C] from sequence_logits plus the recording heads' over recording [B, F]."""
        self._check_recording(logits.shape[0], recording)
        if self.recording_head is None:
            return logits
        normed = self._normed_recording(recording).to(logits.dtype)  # [B, V*F]
        logits = logits + self.recording_head(normed)
        if self.recording_mlp is None:
            return logits
        return logits + self.recording_mlp(normed)

    def _normed_recording(self, recording: Tensor) -> Tensor:
        """[B, V*F] the recording's features -> the same scaled for the heads (cfg.recording_norm),
        at least fp32: a bf16 mean over 1,792 values is coarse."""
        wide = torch.promote_types(recording.dtype, torch.float32)
        recording = recording.to(wide)
        if self.cfg.standardises_recording:
            # per value: the slots' dB and bin scales differ, and so does how much each value
            # varies between recordings. Each view layer-normed over its own values instead
            # (recording_norm "layer") loses its level and spread: with that input a 1-layer
            # MLP over a frozen mha scored 0.365 at 0 dB, standardised 0.445
            # (docs/experiments/band_view)
            return (recording - self.recording_shift.to(wide)) / self.recording_scale.to(wide)
        views = recording.unflatten(-1, (self.cfg.recording_views, -1))  # [B, V, F]
        return F.layer_norm(views, views.shape[-1:]).flatten(-2)

    @torch.no_grad()
    def fit_recording_norm(self, recording: Tensor) -> None:
        """Set the standard norm's shift and scale to the mean and standard deviation of each
        value over these recordings' features [N, V*F]."""
        if not self.cfg.standardises_recording:
            raise ValueError("recording_norm: this model has no standardised recording norm")
        wide = recording.double()
        self.recording_shift.copy_(wide.mean(0))
        # a value that hardly varies is not blown up into unit-size noise
        self.recording_scale.copy_(wide.std(0).clamp_min(SCALE_FLOOR))

    def _pool(self, h: Tensor, mask: Tensor | None) -> Tensor:
        """h [B, T, D] -> [B, D] over the real tokens."""
        if self.pool_query is None:
            if mask is None:
                return h.mean(dim=1)
            real = mask[..., None]  # [B, T, 1]
            return h.masked_fill(~real, 0.0).sum(dim=1) / real.sum(dim=1)
        scores = h @ self.pool_query / h.shape[-1] ** 0.5  # [B, T]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        # at least fp32: a bf16 softmax over thousands of frames would round the weights away
        wide = torch.promote_types(scores.dtype, torch.float32)
        weights = torch.softmax(scores.to(wide), dim=1).to(h.dtype)  # [B, T]
        return torch.einsum("bt,btd->bd", weights, h)

    def _check_recording(self, batch: int, recording: Tensor | None) -> None:
        if self.recording_head is None and recording is not None:
            raise ValueError("recording: this model has no recording head (recording_head false)")
        expected = (batch, self.cfg.n_recording_features)
        if self.recording_head is not None and (recording is None or recording.shape != expected):
            got = None if recording is None else tuple(recording.shape)
            raise ValueError(f"recording: expected [{expected[0]}, {expected[1]}], got {got}")

    def _check_frames(self, x: Tensor, mask: Tensor | None) -> Tensor | None:
        """Validate shapes; returns the mask to use (None when every token is real)."""
        if x.dim() != 3 or x.shape[-1] != self.cfg.n_features:
            raise ValueError(
                f"features: expected [batch, frames, {self.cfg.n_features}], got {tuple(x.shape)}"
            )
        if mask is None:
            return None
        if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
            raise ValueError(
                f"mask: expected bool [{x.shape[0]}, {x.shape[1]}], "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        lengths = mask.sum(dim=1)
        prefix = torch.arange(mask.shape[1], device=mask.device) < lengths[:, None]
        # one read back from the device for both checks
        shortest, right_padded = torch.stack([lengths.min(), (mask == prefix).all()]).tolist()
        if shortest == 0:
            raise ValueError("mask: every sequence needs at least one real token")
        if not right_padded:
            # latent and latte rotate keys by absolute position: a token's position must not
            # depend on the padding before it
            raise ValueError("mask: each sequence's real tokens must come first (padding last)")
        # a batch of equal lengths runs unmasked (SDPA can then pick its fastest kernel)
        return None if shortest == x.shape[1] else mask

    def kv_memory_bytes(self, batch: int, seq_len: int) -> int:
        """Bytes of K/V (or latent) state the attention backend materialises over all layers for
        this batch and length, at the model's parameter dtype."""
        dtype = self.embed.weight.dtype
        return sum(block.attn.kv_state_bytes(batch, seq_len, dtype) for block in self.blocks)
