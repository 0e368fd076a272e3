"""Small synthetic checkpoints that take the same code path as real models.

No machine of this project can download weights, so tests and benchmarks build their own Qwen2
checkpoints: real ``Qwen2ForCausalLM`` weights (seeded random init), real safetensors files, a real
byte-level BPE tokenizer with Qwen's special tokens and chat template. ``make_pair`` builds the L2S
setting: a "System 1" base and a "System 2" that is the base plus a seeded perturbation (a stand-in for
fine-tuning), so task vectors are small relative to the weights, as in the paper's pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# Qwen2.5's chat template, reduced to what generation needs (system/user/assistant turns).
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "The answer is 42. So the final answer is \\boxed{42}.",
    "Wait, let me double-check: 3 + 4 = 7, so the result is 7.",
    "Let me verify the computation once more. Re-examine the steps and recap.",
    "Question: Natalia sold clips to 48 of her friends in April, and then half as many in May.",
    "Solve for x: 2x + 3 = 11. Subtract 3 and divide by 2, x = 4. \\frac{1}{2} + \\sqrt{2}",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] { } ^ _ . , : ; ! ? ' \" $ % & # @",
]

#: Shapes of a few named Qwen2 configurations (hidden, intermediate, layers, heads, kv heads, vocab).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, vocab_size=2048),
    # The Qwen2.5-1.5B / DeepSeek-R1-Distill-Qwen-1.5B shape (untied so both heads exist, as in R1-1.5B).
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                         rope_theta=10000.0),
}


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with Qwen's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - len(SPECIAL_TOKENS), 300),
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    fast.chat_template = QWEN_CHAT_TEMPLATE
    return fast


def qwen2_config(shape: str = "tiny", tie_word_embeddings: bool = False, **overrides):
    """A ``Qwen2Config`` of a named shape (see ``SHAPES``)."""
    from transformers import Qwen2Config

    kw = dict(SHAPES[shape])
    kw.setdefault("max_position_embeddings", 2048)
    kw.update(overrides)
    return Qwen2Config(tie_word_embeddings=tie_word_embeddings, bos_token_id=None, **kw)


def make_model(
    out_dir: str | Path,
    seed: int = 0,
    shape: str = "tiny",
    dtype: torch.dtype = torch.float32,
    tie_word_embeddings: bool = False,
    perturb_from: str | Path | None = None,
    perturb_scale: float = 0.05,
    tokenizer: bool = True,
    max_shard_size: str | int = "5GB",
    **config_overrides,
) -> Path:
    """Write a seeded random Qwen2 checkpoint (safetensors, config, tokenizer, generation config).

    With ``perturb_from``, the weights are those of that checkpoint plus ``perturb_scale`` times a seeded
    Gaussian scaled to each tensor's RMS: a model "fine-tuned" from it, whose task vector is known.
    """
    from transformers import GenerationConfig, Qwen2ForCausalLM

    out = Path(out_dir)
    cfg = qwen2_config(shape, tie_word_embeddings=tie_word_embeddings, **config_overrides)
    tokenizer_obj = build_tokenizer(cfg.vocab_size) if tokenizer else None
    if tokenizer_obj is not None:
        cfg.eos_token_id = tokenizer_obj.convert_tokens_to_ids("<|im_end|>")
        cfg.pad_token_id = tokenizer_obj.pad_token_id
    torch.manual_seed(seed)
    if perturb_from is not None:
        model = Qwen2ForCausalLM.from_pretrained(perturb_from, dtype=torch.float32)
        if model.config.tie_word_embeddings != tie_word_embeddings:
            model.config.tie_word_embeddings = tie_word_embeddings
            if not tie_word_embeddings:
                model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, p in model.named_parameters():
                rms = p.float().pow(2).mean().sqrt().clamp_min(1e-3)
                p.add_(torch.randn(p.shape, generator=gen) * rms * perturb_scale)
    else:
        with torch.device("cpu"):
            model = Qwen2ForCausalLM(cfg)
        # transformers' init leaves norms at 1 and biases at 0; give them a little spread so merges of
        # 1-D tensors are not trivially equal.
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.ndim == 1:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    model = model.to(dtype)
    model.generation_config = GenerationConfig(
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, do_sample=False
    )
    model.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_size)
    if tokenizer_obj is not None:
        tokenizer_obj.save_pretrained(out)
    return out


def make_pair(
    root: str | Path, seed: int = 0, shape: str = "tiny", dtype: torch.dtype = torch.float32, **kw
) -> tuple[Path, Path]:
    """A (System 1, System 2) pair under ``root``: S2 = S1 + a seeded perturbation."""
    root = Path(root)
    s1 = make_model(root / "system1", seed=seed, shape=shape, dtype=dtype, **kw)
    s2 = make_model(root / "system2", seed=seed + 1000, shape=shape, dtype=dtype, perturb_from=s1, **kw)
    return s1, s2


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
