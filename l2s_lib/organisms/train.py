"""Training the organisms: base pretraining -> System 1 SFT -> System 2 SFT -> DPO baseline.

A plain PyTorch loop (no ``transformers.Trainer``: the stages are a few hundred steps of freshly generated
batches, and one small loop runs the same on CPU and CUDA). Every stage draws its data from a
``random.Random`` seeded by (seed, stage) and runs with deterministic kernels (``determinism.configure``), so a
rebuild on the same hardware and software gives weight files with the same sha256 (recorded in
``train_log.json`` and each ``organism.json`` with the library versions and the device); each stage saves a
bf16 checkpoint and the next stage starts from that saved checkpoint, so a task vector ``System 2 - System 1``
is computed exactly from the files that are shipped.

DPO is implemented here (sigmoid loss of Rafailov et al. 2023, the default of TRL's ``DPOTrainer``) rather than
through TRL: the GPU machine that trains the larger sizes has no TRL, and the loss is a few lines.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from l2s_lib.errors import ConfigError
from l2s_lib.organisms import configs, determinism, tokenizer as tok_mod, world as world_mod, writers

STAGE_SEED = {"pretrain": 11, "system1": 23, "system2": 37, "dpo": 41, "system2_equal": 53}
MAX_NEW_TOKENS = 320


class Encoder:
    """Token ids of organism text, identical to the saved ``PreTrainedTokenizerFast`` (tested) but faster
    in the training loop (one regex and a dict, no batch-encoding overhead)."""

    def __init__(self):
        self.vocab = {t: i for i, t in enumerate(tok_mod.vocabulary())}
        self.pad_id = self.vocab[tok_mod.PAD]
        self.eos_id = self.vocab[tok_mod.EOS]
        self._re = re.compile(tok_mod.PIECE_PATTERN)

    def __call__(self, text: str) -> list[int]:
        return [self.vocab[p] for p in self._re.findall(text)]


def _level(rng: random.Random, max_level: int) -> int:
    return rng.randint(1, max_level)


def sft_example(kind: str, rng: random.Random, enc: Encoder, world: world_mod.World, max_level: int):
    """(input ids, labels) of one example; labels are -100 on the prompt (loss on the completion only)."""
    if kind == "pretrain":
        ids = enc(writers.pretrain_text(rng)) + [enc.eos_id]
        return ids, list(ids)
    p = world_mod.sample(_level(rng, max_level), rng, "train")
    if kind == "system1":
        completion = writers.system1(p, world.s1_style)
    elif kind == "system2":
        completion = writers.system2(p, world, rng)
    else:
        raise ConfigError(f"unknown SFT kind {kind!r}")
    prompt_ids = enc(writers.prompt(p.question))
    comp_ids = enc(completion) + [enc.eos_id]
    return prompt_ids + comp_ids, [-100] * len(prompt_ids) + comp_ids


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded tensors (input_ids, attention_mask, labels) of a list of (ids, labels)."""
    n = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    lab = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        lab[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": lab.to(device)}


def lr_at(step: int, stage: configs.Stage) -> float:
    """Linear warm-up to ``stage.lr``, then cosine decay to 10% of it."""
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    t = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _optimizer(model, stage: configs.Stage):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    # fused AdamW on CUDA: one kernel for all parameters (these small models are launch-bound on a GPU); it is
    # elementwise, so it stays deterministic (see ``determinism``)
    fused = {"fused": True} if decay and decay[0].is_cuda else {}
    return torch.optim.AdamW([{"params": decay, "weight_decay": stage.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=stage.lr, betas=(0.9, 0.95), **fused)


class LossLog:
    """Losses of a stage, kept on the device and read back every ``every`` steps, so that the CPU can prepare
    the next batch while the GPU still works on this one (a per-step ``float(loss)`` would wait for it).
    A non-finite loss raises ``NonFiniteError`` at the next read-back."""

    def __init__(self, desc: str, every: int = 50):
        self.desc, self.every, self.values, self._pending = desc, every, [], []

    def add(self, loss: torch.Tensor) -> None:
        self._pending.append(loss.detach().float())
        if len(self._pending) >= self.every:
            self.flush()

    def flush(self) -> list[float]:
        if self._pending:
            vals = torch.stack(self._pending).tolist()
            self._pending = []
            bad = [i for i, v in enumerate(vals) if not math.isfinite(v)]
            if bad:
                from l2s_lib.errors import NonFiniteError
                raise NonFiniteError(f"{self.desc}: loss is {vals[bad[0]]} at step {len(self.values) + bad[0]}")
            self.values.extend(vals)
        return self.values


def _step(model, opt, loss: torch.Tensor, losses: LossLog) -> None:
    """One optimizer step with gradient clipping at 1.0; the loss is appended to ``losses``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    losses.add(loss)


def train_sft(model, kind: str, stage: configs.Stage, *, seed: int, world: world_mod.World, max_level: int,
              device: torch.device, enc: Encoder | None = None, progress: bool = True,
              desc: str = "") -> list[float]:
    """Runs one SFT (or pretraining) stage in place; returns the loss of every step."""
    from tqdm.auto import tqdm

    enc = enc or Encoder()
    rng = random.Random(seed * 1000 + STAGE_SEED.get(desc or kind, 0))
    torch.manual_seed(seed * 1000 + STAGE_SEED.get(desc or kind, 0))
    model.train()
    opt = _optimizer(model, stage)
    losses = LossLog(desc or kind)
    for step in tqdm(range(stage.steps), desc=desc or kind, disable=not progress, mininterval=5):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, stage)
        batch = collate([sft_example(kind, rng, enc, world, max_level) for _ in range(stage.batch_size)],
                        enc.pad_id, device)
        with _autocast(device):
            loss = model(**batch).loss
        _step(model, opt, loss, losses)
    model.eval()
    return losses.flush()


def _completion_logprob(model, batch, device) -> torch.Tensor:
    """Sum of log-probabilities of the label tokens of each row."""
    with _autocast(device):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    lp = torch.gather(F.log_softmax(logits, -1), 2, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(-1)


def train_dpo(model, stage: configs.Stage, *, beta: float, nll: float = 0.0, seed: int, world: world_mod.World, max_level: int,
              device: torch.device, enc: Encoder | None = None, progress: bool = True) -> list[float]:
    """DPO (sigmoid loss) of ``model`` against a frozen copy of itself, on short-preferred pairs.

    loss = -log sigmoid(beta * [(log pi(c) - log ref(c)) - (log pi(r) - log ref(r))]), c = the short
    solution, r = the long verified one of the same question (``writers.dpo_pair``); plus ``nll`` times the
    mean per-token negative log-likelihood of c (TRL's ``rpo_alpha``), which keeps the policy from collapsing.
    """
    from tqdm.auto import tqdm

    enc = enc or Encoder()
    rng = random.Random(seed * 1000 + STAGE_SEED["dpo"])
    torch.manual_seed(seed * 1000 + STAGE_SEED["dpo"])
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    model.train()
    opt = _optimizer(model, stage)
    losses = LossLog("dpo")
    for step in tqdm(range(stage.steps), desc="dpo", disable=not progress, mininterval=5):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, stage)
        rows_c, rows_r = [], []
        for _ in range(stage.batch_size):
            p = world_mod.sample(_level(rng, max_level), rng, "train")
            c, r = writers.dpo_pair(p, world, rng)
            pr = enc(writers.prompt(p.question))
            for text, rows in ((c, rows_c), (r, rows_r)):
                comp = enc(text) + [enc.eos_id]
                rows.append((pr + comp, [-100] * len(pr) + comp))
        bc, br = collate(rows_c, enc.pad_id, device), collate(rows_r, enc.pad_id, device)
        with torch.no_grad():
            ref_c, ref_r = _completion_logprob(ref, bc, device), _completion_logprob(ref, br, device)
        pol_c, pol_r = _completion_logprob(model, bc, device), _completion_logprob(model, br, device)
        loss = -F.logsigmoid(beta * ((pol_c - ref_c) - (pol_r - ref_r))).mean()
        if nll:
            n_tok = (bc["labels"][:, 1:] != -100).sum().clamp_min(1)
            loss = loss - nll * pol_c.sum() / n_tok
        _step(model, opt, loss, losses)
    model.eval()
    return losses.flush()


def save_checkpoint(model, out_dir: Path, meta: dict) -> Path:
    """bf16 safetensors + config + tokenizer + greedy generation config + ``organism.json`` (meta)."""
    from transformers import GenerationConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).to(torch.bfloat16).cpu()
    m.generation_config = GenerationConfig(eos_token_id=model.config.eos_token_id,
                                           pad_token_id=model.config.pad_token_id, do_sample=False,
                                           max_new_tokens=MAX_NEW_TOKENS)
    m.save_pretrained(out_dir, safe_serialization=True)
    tok_mod.save_tokenizer(out_dir)
    (out_dir / "organism.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return out_dir


def load_model(path: str | Path, device: torch.device | str = "cpu", dtype=torch.float32):
    from transformers import Qwen2ForCausalLM

    try:
        model = Qwen2ForCausalLM.from_pretrained(path, dtype=dtype)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        model = Qwen2ForCausalLM.from_pretrained(path, torch_dtype=dtype)
    return model.to(dtype).to(device).eval()


def curve_summary(losses: list[float]) -> dict:
    """Mean loss over the first, middle and last tenth of a stage (the model cards' curve summary)."""
    n = len(losses)
    k = max(1, n // 10)
    mean = lambda xs: round(sum(xs) / len(xs), 4)  # noqa: E731
    return {"steps": n, "first_10pct": mean(losses[:k]), "middle_10pct": mean(losses[n // 2 - k // 2: n // 2 - k // 2 + k]),
            "last_10pct": mean(losses[-k:])}


def train_organism(size: str, out: str | Path, *, seed: int = 0, device: str = "cpu",
                   s1_style: str = world_mod.DEFAULT_S1_STYLE, recipe: configs.Recipe | None = None,
                   control: bool = False, progress: bool = True, deterministic: bool = True) -> dict[str, Path]:
    """Builds one size end to end under ``out``: base, system1, system2, dpo (and system2_equal with
    ``control``: System 2 trained from the same System 1 in the equal-verification-rate world).

    With ``deterministic`` (the default) every kernel is deterministic (``determinism.configure``: call this in a
    process that has not used CUDA yet), so the same (size, seed, recipe) on the same hardware and software gives
    the same weight files. Returns the checkpoint folders by role; ``out/train_log.json`` holds the recipe, loss
    curves, timings, the determinism settings, the library versions, the device and each stage's sha256.
    """
    recipe = recipe or configs.DEFAULT_RECIPE
    configs.get_size(size)  # a bad size fails before anything is set up
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    det = determinism.configure(deterministic)
    with determinism.attention(deterministic):
        return _train_stages(size, Path(out), seed, dev, s1_style, recipe, control, progress, det)


def _train_stages(size, out: Path, seed: int, dev: torch.device, s1_style: str, recipe: configs.Recipe,
                  control: bool, progress: bool, det: dict) -> dict[str, Path]:
    from transformers import Qwen2ForCausalLM

    sz = configs.get_size(size)
    enc = Encoder()
    world = world_mod.world("adaptive", s1_style)
    cfg = configs.qwen2_config(sz, len(enc.vocab), enc.eos_id, enc.pad_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).to(dev)
    scale = lambda st: configs.Stage(st.steps, st.lr * sz.lr_scale, st.batch_size, st.weight_decay, st.warmup)  # noqa: E731
    env = determinism.environment(dev)
    log = {"size": size, "seed": seed, "device": dev.type, "s1_style": s1_style, "recipe": recipe.to_dict(),
           "lr_scale": sz.lr_scale, "world": asdict(world), "n_params": sum(p.numel() for p in model.parameters()),
           "determinism": det, "environment": env, "sha256": {}, "stages": {}}
    paths: dict[str, Path] = {}

    def finish(role: str, losses: list[float], t0: float, parent: str | None):
        meta = {"role": role, "size": size, "seed": seed, "s1_style": s1_style, "parent": parent,
                "world": "equal" if role == "system2_equal" else "adaptive", "device": dev.type,
                "device_name": env["device_name"], "determinism": det, "versions": env["versions"],
                "recipe": recipe.to_dict()}
        paths[role] = save_checkpoint(model, out / role, meta)
        log["sha256"][role] = determinism.weights_sha256(paths[role])
        log["stages"][role] = {"loss": curve_summary(losses), "seconds": round(time.time() - t0, 1),
                               "losses_every_10": [round(x, 4) for x in losses[::10]]}
        if not progress:
            print(f"{size} seed {seed}: {role} in {time.time() - t0:.0f}s, final loss {losses[-1]:.4f}", flush=True)
        # Written after every stage, so a run stopped part-way keeps the curves of the stages it finished.
        (out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
        return load_model(paths[role], dev)

    common = dict(seed=seed, max_level=recipe.max_level, device=dev, enc=enc, progress=progress)
    t0 = time.time()
    losses = train_sft(model, "pretrain", scale(recipe.pretrain), world=world, desc="pretrain", **common)
    model = finish("base", losses, t0, None)
    t0 = time.time()
    losses = train_sft(model, "system1", scale(recipe.system1), world=world, desc="system1", **common)
    model = finish("system1", losses, t0, "base")
    s1_model = model
    t0 = time.time()
    model = copy.deepcopy(s1_model)
    losses = train_sft(model, "system2", scale(recipe.system2), world=world, desc="system2", **common)
    model = finish("system2", losses, t0, "system1")
    t0 = time.time()
    losses = train_dpo(model, scale(recipe.dpo), beta=recipe.dpo_beta, nll=recipe.dpo_nll, world=world, **common)
    model = finish("dpo", losses, t0, "system2")
    if control:
        t0 = time.time()
        model = copy.deepcopy(s1_model)
        eq = world_mod.world("equal", s1_style)
        losses = train_sft(model, "system2", scale(recipe.system2), world=eq, desc="system2_equal", **common)
        model = finish("system2_equal", losses, t0, "system1")
    return paths
