"""The organism size ladder and the training recipe.

Sizes grow mostly in width (the issue's evidence suggested wider rather than deeper models). Parameter counts
(tied embeddings, a 78-token vocabulary) are computed by ``n_params`` and printed by ``l2s organisms sizes``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from l2s_lib.errors import ConfigError


@dataclass(frozen=True)
class Size:
    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    lr_scale: float  # multiplies every stage's learning rate (larger models take smaller steps)


SIZES: dict[str, Size] = {
    s.name: s
    for s in (
        Size("1m", 128, 512, 4, 4, 2, 1.0),
        Size("6m", 256, 1024, 6, 8, 4, 0.7),
        Size("30m", 512, 2048, 8, 8, 4, 0.4),
        Size("100m", 768, 3072, 12, 12, 4, 0.25),
    )
}


@dataclass(frozen=True)
class Stage:
    """One training stage: ``steps`` optimizer steps of ``batch_size`` sequences at peak ``lr``."""

    steps: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 0.1
    warmup: int = 50


@dataclass(frozen=True)
class Recipe:
    """Steps and learning rates of the four stages (base -> System 1 -> System 2 -> DPO), and DPO's beta."""

    # Large batches: the small sizes are launch-bound on a GPU, so 256 sequences cost about what 64 do.
    pretrain: Stage = field(default_factory=lambda: Stage(500, 1.5e-3, batch_size=256))
    system1: Stage = field(default_factory=lambda: Stage(600, 1e-3, batch_size=256))
    system2: Stage = field(default_factory=lambda: Stage(600, 5e-4, batch_size=256))
    dpo: Stage = field(default_factory=lambda: Stage(100, 1e-5, batch_size=64, weight_decay=0.0, warmup=10))
    dpo_beta: float = 0.1
    # NLL on the chosen side added to the DPO loss (TRL's ``rpo_alpha``): without it DPO collapsed (see README).
    dpo_nll: float = 1.0
    max_level: int = 5

    def to_dict(self) -> dict:
        return asdict(self)

    def scaled(self, factor: float, batch_size: int | None = None) -> "Recipe":
        """The same recipe with every stage's step count multiplied by ``factor`` and, if given, every batch
        size replaced by ``batch_size`` (tests, quick runs)."""
        def s(st: Stage) -> Stage:
            return Stage(max(1, int(st.steps * factor)), st.lr, batch_size or st.batch_size, st.weight_decay,
                         min(st.warmup, max(1, int(st.steps * factor) // 5)))
        return Recipe(s(self.pretrain), s(self.system1), s(self.system2), s(self.dpo), self.dpo_beta, self.dpo_nll,
                      self.max_level)


DEFAULT_RECIPE = Recipe()


def get_size(name: str) -> Size:
    if name not in SIZES:
        raise ConfigError(f"unknown organism size {name!r}; allowed: {', '.join(SIZES)}")
    return SIZES[name]


def qwen2_config(size: str | Size, vocab_size: int, eos_token_id: int, pad_token_id: int):
    """The ``Qwen2Config`` of a ladder size (tied embeddings, no BOS, 512 positions)."""
    from transformers import Qwen2Config

    s = get_size(size) if isinstance(size, str) else size
    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
        num_key_value_heads=s.num_key_value_heads, max_position_embeddings=512, rope_theta=10000.0,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )


def n_params(size: str, vocab_size: int = 78) -> int:
    """Number of parameters of a ladder size (tied embeddings counted once)."""
    s = get_size(size)
    h, i, L = s.hidden_size, s.intermediate_size, s.num_hidden_layers
    kv = h // s.num_attention_heads * s.num_key_value_heads
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    return vocab_size * h + L * per_layer + h
