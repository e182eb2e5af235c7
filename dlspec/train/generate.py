"""`dlspec generate RUN`: sample text from a character-level language model a run trained.

The run directory has all it needs: spec.yaml (the resolved spec), the weights,
and vocab.json (the alphabet and context length the data set used).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dlspec.core.args import SEED, bounded_int, finite_float
from dlspec.core.errors import DlspecError, shorten

_WEIGHTS = {"final": "weights.pt", "best": "checkpoints/best.pt", "last": "checkpoints/last.pt"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory written by `dlspec train`")
    p.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    p.add_argument("--tokens", type=bounded_int(0, 10**6), default=200, help="characters to generate (default 200)")
    p.add_argument("--temperature", type=finite_float, default=0.8, help="sampling temperature (default 0.8)")
    p.add_argument("--top-k", type=bounded_int(1, 2**31), default=None, help="sample among the k likeliest characters only")
    p.add_argument("--seed", type=SEED, default=0, help="sampling seed (default 0)")
    p.add_argument("--weights", choices=tuple(_WEIGHTS), default="final", help="which weights (default final)")


def run(args: argparse.Namespace) -> int:
    print(generate(args.run_dir, args.prompt, args.tokens, temperature=args.temperature, top_k=args.top_k,
                   seed=args.seed, weights=args.weights))
    return 0


def generate(run_dir: Path, prompt: str = "", tokens: int = 200, *, temperature: float = 0.8,
             top_k: int | None = None, seed: int = 0, weights: str = "final") -> str:
    """The prompt followed by `tokens` sampled characters."""
    import torch

    import dlspec
    from dlspec.train import checkpoint
    from dlspec.train.rundir import RunDir
    if not 0 <= tokens <= 10**6 or not 0 < temperature < float("inf") or (top_k is not None and top_k < 1):
        raise DlspecError.single("need --tokens >= 0, --temperature > 0 and --top-k >= 1", usage=True)
    vocab_file = run_dir / "vocab.json"
    if not vocab_file.is_file():
        raise DlspecError.single(f"{run_dir} has no vocab.json: it is not a run of a text (character-level) model",
                                 usage=True, hint="train a spec whose data set has `kind: text` first")
    vocab = RunDir(run_dir).read_json("vocab.json", "{chars: the alphabet, block: the context length}")
    chars, block = vocab.get("chars"), vocab.get("block")
    if not isinstance(chars, str) or not chars or not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise DlspecError.single(f"{vocab_file} is damaged: chars {shorten(repr(chars), 40)}, block "
                                 f"{shorten(repr(block), 40)}", expected="chars: a non-empty string, block: an int >= 1")
    index = {ch: i for i, ch in enumerate(chars)}
    prompt = prompt or ("\n" if "\n" in index else chars[0])
    unknown = sorted(set(prompt) - set(index))
    if unknown:
        raise DlspecError.single(f"the prompt has characters the model never saw: {''.join(unknown)!r}", usage=True,
                                 hint=f"use characters of its training text (listed in {vocab_file})")
    spec = dlspec.load(run_dir / "spec.yaml")
    model = dlspec.build(spec)
    weights_file = run_dir / _WEIGHTS[weights]
    try:
        model.load_state_dict(checkpoint.load(weights_file)["model"])
    except RuntimeError as exc:  # keys or shapes of another model
        raise DlspecError.single(f"{weights_file} does not fit the model of {run_dir / 'spec.yaml'}: "
                                 f"{str(exc).splitlines()[-1].strip()[:200]}",
                                 hint="the run directory's files come from different runs") from None
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[index[ch] for ch in prompt]], dtype=torch.int64)
    with torch.no_grad():
        for _ in range(tokens):
            logits = model(ids[:, -block:])  # (1, T, V): the model sees at most its context length
            logits = (logits[0, -1, :len(chars)] / temperature).float()  # ids past the alphabet never occur
            if top_k is not None:
                cutoff = logits.topk(min(top_k, len(logits))).values[-1]
                logits = logits.masked_fill(logits < cutoff, float("-inf"))
            next_id = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            ids = torch.cat([ids, next_id[None]], dim=1)
    return "".join(chars[i] for i in ids[0].tolist())
