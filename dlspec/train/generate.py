"""`dlspec generate RUN`: sample text from a language model a run trained.

The run directory has all it needs: the resolved spec, the weights, and the tokenizer and context length
the data set used (read through `rundir`): a character-level text's alphabet, or the byte-level or BPE
tokenizer of token files.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dlspec.core.args import SEED, bounded_int, finite_float
from dlspec.core.errors import DlspecError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory written by `dlspec train`")
    p.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    p.add_argument("--tokens", type=bounded_int(0, 10**6), default=200,
                   help="characters (or tokens) to generate (default 200)")
    p.add_argument("--temperature", type=finite_float, default=0.8, help="sampling temperature (default 0.8)")
    p.add_argument("--top-k", type=bounded_int(1, 2**31), default=None, help="sample among the k likeliest ids only")
    p.add_argument("--seed", type=SEED, default=0, help="sampling seed (default 0)")
    p.add_argument("--weights", choices=("final", "best", "last"),
                   help="which weights (default: best, else final, else last; as export and init_from choose)")


def run(args: argparse.Namespace) -> int:
    print(generate(args.run_dir, args.prompt, args.tokens, temperature=args.temperature, top_k=args.top_k,
                   seed=args.seed, weights=args.weights))
    return 0


def generate(run_dir: Path, prompt: str = "", tokens: int = 200, *, temperature: float = 0.8,
             top_k: int | None = None, seed: int = 0, weights: str | None = None) -> str:
    """The prompt followed by `tokens` sampled characters (or tokens)."""
    import torch

    import dlspec
    from dlspec.train import checkpoint, rundir
    if not 0 <= tokens <= 10**6 or not 0 < temperature < float("inf") or (top_k is not None and top_k < 1):
        raise DlspecError.single("need --tokens >= 0, --temperature > 0 and --top-k >= 1", usage=True)
    run = rundir.RunDir(run_dir)
    codec, block = run.codec()
    if not prompt:
        prompt = "\n" if codec.kind != "chars" or "\n" in codec.text else codec.text[0]
    try:
        prompt_ids = codec.encode(prompt)
    except ValueError as exc:
        raise DlspecError.single(f"the prompt has characters the model never saw: {str(exc)!r}", usage=True,
                                 hint=f"use characters of its training text (listed in {run.path / 'vocab.json'})") from None
    spec = dlspec.load(run.spec)
    model = dlspec.build(spec)
    weights_file = rundir.weights_path(run.path, weights)
    try:
        model.load_state_dict(checkpoint.load(weights_file)["model"])
    except RuntimeError as exc:  # keys or shapes of another model
        raise DlspecError.single(f"{weights_file} does not fit the model of {run.spec}: "
                                 f"{str(exc).splitlines()[-1].strip()[:200]}",
                                 hint="the run directory's files come from different runs") from None
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([prompt_ids], dtype=torch.int64)
    with torch.no_grad():
        for _ in range(tokens):
            logits = model(ids[:, -block:])  # (1, T, V): the model sees at most its context length
            logits = (logits[0, -1, :codec.vocab_size] / temperature).float()  # ids past the vocabulary never occur
            if top_k is not None:
                cutoff = logits.topk(min(top_k, len(logits))).values[-1]
                logits = logits.masked_fill(logits < cutoff, float("-inf"))
            next_id = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            ids = torch.cat([ids, next_id[None]], dim=1)
    return prompt + codec.decode(ids[0, len(prompt_ids):].tolist())
