"""Full-size reference checkpoints through dlspec: parameters, tensors loaded, max abs difference, load time.

For each shipped spec, the reference model is built by its own library at full size with random weights
(nothing is downloaded), saved in its native format (torch.save(state_dict) as a .pth for torchvision,
save_pretrained's folder of .safetensors for Hugging Face), then loaded through `dlspec.build(spec,
weights=...)`. Both run in eval mode on the same input; the table gives the largest absolute difference of
the outputs, and the load time (read, map, shape-check, copy; the build itself not counted).

Llama is measured at TinyLlama-1.1B's sizes through specs/llama2-7b.yaml (--set): 7B in float32 (27 GB,
twice over with the reference) does not fit the machines this runs on; the mapping and the code are the same.

Usage:  python benchmarks/bench_weights.py [--only NAME ...] [--json OUT]
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from references import torchvision_module, transformers  # noqa: E402

import dlspec  # noqa: E402


def _torchvision(module: str, builder: str, spec: str):
    def make():
        model = getattr(torchvision_module(module), builder)().eval()
        image = torch.randn(2, 3, 224, 224)
        return model, spec, [], "pth", (image,), lambda m: m(image), lambda out: out
    return make


def _gpt2():
    hf = transformers()
    model = hf.GPT2LMHeadModel(hf.GPT2Config()).eval()
    tokens = torch.randint(0, 50257, (2, 64))
    return model, "gpt2-small", [], "hf", (tokens,), lambda m: m(tokens).logits, lambda out: out


def _bert():
    hf = transformers()
    model = hf.BertModel(hf.BertConfig()).eval()
    tokens, types = torch.randint(0, 30522, (2, 64)), torch.randint(0, 2, (2, 64))
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[1, 40:] = False

    def theirs(m):
        out = m(input_ids=tokens, token_type_ids=types, attention_mask=mask.long())
        return torch.cat([out.last_hidden_state[mask], out.pooler_output])
    return model, "bert-base", [], "hf", (tokens, types, mask), theirs, lambda out: torch.cat([out[0][mask], out[1]])


def _llama():
    hf = transformers()
    config = hf.LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                            num_attention_heads=32, num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=10000.0,
                            tie_word_embeddings=False)
    model = hf.LlamaForCausalLM(config).eval()
    tokens = torch.randint(0, 32000, (1, 32))
    sizes = ["model.vars.dim=2048", "model.vars.hidden=5632", "model.vars.layers=22", "model.vars.kv_heads=4",
             "model.dims.T.max=2048"]
    return model, "llama2-7b", sizes, "hf", (tokens,), lambda m: m(tokens).logits, lambda out: out


CASES = {
    "resnet18": _torchvision("resnet", "resnet18", "resnet18"),
    "resnet50": _torchvision("resnet", "resnet50", "resnet50"),
    "vit-b-16": _torchvision("vision_transformer", "vit_b_16", "vit-b-16"),
    "gpt2-small": _gpt2,
    "bert-base": _bert,
    "llama (TinyLlama-1.1B sizes)": _llama,
}


def measure(name: str, make, folder: Path) -> dict:
    torch.manual_seed(0)
    reference, spec, overrides, native, inputs, theirs, ours = make()
    for m in reference.modules():  # running statistics that make batch norm more than the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    if native == "pth":
        source = folder / f"{spec}.pth"
        torch.save(reference.state_dict(), source)
    else:
        source = folder / spec
        reference.save_pretrained(source)
    with torch.no_grad():
        expected = theirs(reference)
    params = sum(p.numel() for p in reference.parameters())
    del reference
    gc.collect()
    loaded = dlspec.build(ROOT / "specs" / f"{spec}.yaml", overrides, weights=source).eval()
    report = loaded.weights_report
    with torch.no_grad():
        diff = (ours(loaded(*inputs)) - expected).abs().max().item()
    return {"reference": name, "parameters": params, "tensors_loaded": len(report.loaded), "tied": len(report.tied),
            "max_abs_diff": diff, "load_s": round(report.seconds, 2), "source": report.kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names of the cases to run (default: all)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    print(f"{'reference':<30} {'parameters':>14} {'loaded':>7} {'tied':>5} {'max abs diff':>13} {'load s':>7}  source")
    for name, make in CASES.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="dlspec-bench-weights-") as tmp:
            row = measure(name, make, Path(tmp))
        rows.append(row)
        print(f"{row['reference']:<30} {row['parameters']:>14,} {row['tensors_loaded']:>7} {row['tied']:>5} "
              f"{row['max_abs_diff']:>13.2e} {row['load_s']:>7.2f}  {row['source']}", flush=True)
        gc.collect()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
