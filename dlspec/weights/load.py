"""Weights into a built model, checked and reported; and out again, in the source's layout.

`load_into` reads a source (sources.py), maps its names with the spec's `weights:` rules (mapping.py; a
dlspec checkpoint needs none), then compares every name and shape with the model's state dict before any
tensor is read. The report says what was loaded, tied, ignored, missing, unexpected and of another shape,
each model name with the spec line of its layer. Strict (the default), anything missing, unexpected or
mismatched is an error listing all of it; nothing is loaded then.
"""
from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dlspec.core.errors import DlspecError, Loc, Problem, did_you_mean

from . import mapping, sources
from .presets import PRESETS
from .rules import Rule, parse_rule

_SHOWN = 12  # problems of one kind listed before "and N more"


@dataclass(frozen=True)
class Entry:
    name: str  # the model's name; for an unexpected or ignored tensor, the checkpoint's as mapped
    shape: tuple[int, ...] | None  # the model's
    got: tuple[int, ...] | None  # the checkpoint's, mapped
    origin: tuple[str, ...] = ()  # the checkpoint's names
    loc: Loc | None = None  # the spec line of the layer (or of the rule that made the name)
    note: str = ""

    def to_json(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.got is not None and self.got != self.shape:
            out["checkpoint_shape"] = list(self.got)
        if self.origin and self.origin != (self.name,):
            out["from"] = list(self.origin)
        if self.loc is not None:
            out["spec"] = str(self.loc)
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Report:
    source: str
    kind: str
    loaded: tuple[Entry, ...] = ()
    tied: tuple[Entry, ...] = ()
    ignored: tuple[Entry, ...] = ()
    missing: tuple[Entry, ...] = ()
    unexpected: tuple[Entry, ...] = ()
    mismatched: tuple[Entry, ...] = ()
    seconds: float = 0.0
    problems: tuple[Problem, ...] = field(default=(), repr=False)  # what made it fail, located

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.problems)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"source": self.source, "kind": self.kind, "seconds": round(self.seconds, 3)}
        for part in ("loaded", "tied", "ignored", "missing", "unexpected", "mismatched"):
            out[part] = [e.to_json() for e in getattr(self, part)]
        return out

    def summary(self) -> str:
        counts = [f"{len(self.loaded)} tensors loaded"] + [f"{len(getattr(self, p))} {p}" for p in
                                                            ("tied", "ignored", "missing", "unexpected", "mismatched")
                                                            if getattr(self, p)]
        return f"weights from {self.source} ({self.kind}): {', '.join(counts)} in {self.seconds:.2f} s"


def load_into(model: Any, path: Path, *, strict: bool = True, ignore: Sequence[str] = (),
              loc: Loc | None = None) -> Report:
    """Load `path` into a model built by dlspec.build. `ignore`: fnmatch patterns of names (the model's, and the
    checkpoint's once mapped) to leave out, as a new head is. `loc` locates errors about the path itself."""
    import torch
    start = time.perf_counter()
    spec = model.dlspec_spec
    source = sources.read(path, loc)
    rules = [] if source.native else rules_of(spec)
    tensors, dropped, problems = mapping.apply(source.tensors, rules)
    report = _compare(model, spec, source, tensors, dropped, rules, ignore, problems)
    if strict and not report.ok:
        raise DlspecError(list(report.problems) or [Problem(f"the weights at {path} do not fit the model", loc)])
    own = model.state_dict(keep_vars=True)
    done: dict[int, str] = {}  # a tensor -> the name it was loaded under (tied names share one)
    with torch.no_grad():
        for entry in report.loaded:
            value, target = tensors[entry.name].read(), own[entry.name]
            if id(target) in done and not torch.equal(target, value.to(target.dtype)):
                raise DlspecError.single(f"the spec ties {entry.name} to {done[id(target)]}, but the checkpoint's "
                                         "values of the two differ", entry.loc, hint="untie them in the spec, or "
                                         "leave one out of the checkpoint with an ignore rule")
            target.copy_(value)
            done[id(target)] = entry.name
    return _replace(report, seconds=time.perf_counter() - start)


def _replace(report: Report, **changes) -> Report:
    from dataclasses import replace
    return replace(report, **changes)


def rules_of(spec: Any) -> list[Rule]:
    """The spec's mapping: its preset's rules, then its own (inline, or from the file `map` names)."""
    section = (spec.document.get("weights") or {})
    rules, problems = [], []
    if "preset" in section:
        preset = PRESETS[section["preset"]]
        for i, raw in enumerate(preset.rules):
            rule, found = parse_rule(raw, f"preset {preset.name}, rule {i + 1}", lambda p: spec.locate(("weights", "preset")), ())
            assert rule is not None, found  # presets are tested
            rules.append(rule)
    own = section.get("map", [])
    locate = lambda p: spec.locate(("weights", "map") + p)  # noqa: E731
    if isinstance(own, str):
        own, locate = _map_file(spec, own)
    for i, raw in enumerate(own):
        rule, found = parse_rule(raw, f"rule {i + 1} of weights.map", locate, (i,))
        problems += found
        if rule is not None:
            rules.append(rule)
    if problems:
        raise DlspecError(problems)
    return rules


def _map_file(spec: Any, name: str):
    """A mapping file: a YAML list of rules, relative to the spec, each located in that file."""
    from dlspec.core.reading import read_bytes
    from dlspec.front.document import MAX_BYTES, decode, parse_text
    at = spec.locate(("weights", "map"))
    path = Path(spec.path).parent / name
    text = decode(read_bytes(path, MAX_BYTES, what="mapping files", loc=at), str(path))
    data, locs, _ = parse_text(text, str(path))
    if not isinstance(data, list):
        raise DlspecError.single(f"{path} holds {type(data).__name__}, not a list of rules", at,
                                 expected='a YAML list, e.g. - {rename: "transformer.**", to: "**"}')

    def locate(p: tuple) -> Loc | None:
        while p and p not in locs:
            p = p[:-1]
        return locs.get(p, Loc(str(path), 1, 1))
    return data, locate


def _compare(model, spec, source, tensors, dropped, rules, ignore, problems) -> Report:
    """Every name and shape of the mapped checkpoint against the model's state dict; nothing is read."""
    own = model.state_dict(keep_vars=True)
    aliases: dict[int, list[str]] = {}  # a tensor -> its names (tied names share one tensor)
    for name, t in own.items():
        aliases.setdefault(id(t), []).append(name)
    at = _layer_locs(spec)
    skipped = lambda name: any(fnmatch.fnmatchcase(name, p) for p in ignore)  # noqa: E731
    loaded, tied, missing, mismatched, ignored = [], [], [], [], []
    ignored += [Entry(name, None, None, (name,), rule.loc, rule.where) for name, rule in dropped.items()]
    for name, t in own.items():
        shape, here = tuple(t.shape), at(name)
        if skipped(name):
            ignored.append(Entry(name, shape, None, (), here, "init_from ignore"))
            if name in tensors:  # the checkpoint's tensor of that name is left out too
                ignored.append(Entry(name, None, tensors[name].shape, tensors[name].origin, here, "init_from ignore"))
        elif name in tensors:
            got = tensors[name]
            entry = Entry(name, shape, got.shape, got.origin, here, "; ".join(got.rules))
            (loaded if got.shape == shape else mismatched).append(entry)
        elif any(alias in tensors for alias in aliases.get(id(t), ())):
            tied.append(Entry(name, shape, None, (), here, "tied to " + next(a for a in aliases[id(t)] if a in tensors)))
        else:
            missing.append(Entry(name, shape, None, (), here))
    weights_loc = spec.locate(("weights",)) if "weights" in spec.document else None
    unexpected = []
    for name, t in tensors.items():
        if name in own:
            continue
        if skipped(name):
            ignored.append(Entry(name, None, t.shape, t.origin, None, "init_from ignore"))
        else:
            rule_loc = next((r.loc for r in reversed(rules) if r.where in t.rules and r.loc), weights_loc)
            unexpected.append(Entry(name, None, t.shape, t.origin, rule_loc, "; ".join(t.rules)))
    problems = list(problems) + _problems(missing, unexpected, mismatched, source, own)
    return Report(str(source.path), source.kind, tuple(loaded), tuple(tied), tuple(ignored), tuple(missing),
                  tuple(unexpected), tuple(mismatched), problems=tuple(problems))


def _layer_locs(spec: Any):
    """A state-dict name -> the spec line of the layer it belongs to (the longest node path prefixing it)."""
    nodes = {n.name: n.loc for n in spec.graph.nodes}

    def at(name: str) -> Loc | None:
        path = name
        while path:
            path = path.rpartition(".")[0]
            if path in nodes:
                return nodes[path]
        return None
    return at


def _problems(missing, unexpected, mismatched, source, own) -> list[Problem]:
    spare = [e.name for e in unexpected]
    wanted = [e.name for e in missing]
    out = [Problem(f"{e.name} {list(e.shape)} is not in the checkpoint", e.loc,
                   hint=_near(e.name, spare, "the checkpoint has") or "map a checkpoint name onto it in the spec's "
                   "`weights:` section (a preset or a rename rule), or ignore it (init_from)")
           for e in missing[:_SHOWN]]
    out += [Problem(f"the checkpoint's {e.origin[0] if len(e.origin) == 1 else ' + '.join(e.origin)}"
                    f"{f' (mapped to {e.name})' if e.origin != (e.name,) else ''} {list(e.got)} has no place in the model",
                    e.loc, hint=_near(e.name, wanted, "the model has") or
                    f'leave it out with `{{ignore: "{e.name}"}}` in weights.map, or map it onto a model name')
            for e in unexpected[:_SHOWN]]
    out += [Problem(f"{e.name}: the checkpoint's {' + '.join(e.origin)} is {list(e.got)}, the model's is "
                    f"{list(e.shape)}", e.loc,
                    hint="check the spec's sizes (--set), or a transpose/reshape rule for this tensor"
                    + (f" (rules applied: {e.note})" if e.note else "")) for e in mismatched[:_SHOWN]]
    for part, entries in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched)):
        if len(entries) > _SHOWN:
            out.append(Problem(f"... and {len(entries) - _SHOWN} more {part} ({len(entries)} in all, of "
                               f"{len(own)} model tensors; checkpoint {source.path})"))
    return out


def _near(name: str, names: list[str], says: str) -> str | None:
    hint = did_you_mean(name, names)
    return f"{says} {hint[len('did you mean '):].rstrip('?')}" if hint else None


def save_back(model: Any, path: Path) -> dict:
    """The model's weights in the source's layout (the spec's rules undone), as .safetensors. Tied names are
    written once (safetensors stores no shared tensors; loading ties them again)."""
    from safetensors.torch import save

    from dlspec.core.files import atomic_write_bytes
    if path.suffix != ".safetensors":
        raise DlspecError.single(f"weights are saved as .safetensors, not '{path.suffix or path.name}'", usage=True,
                                 expected="a file name ending in .safetensors")
    seen: set[int] = set()
    lazies = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            lazies[name] = mapping.Lazy(tuple(t.shape), lambda t=t: t.detach().cpu(), (name,))
    out, _, problems = mapping.apply(lazies, mapping.inverse(rules_of(model.dlspec_spec)))
    if problems:
        raise DlspecError(problems)
    tensors = {name: t.read().contiguous() for name, t in out.items()}
    atomic_write_bytes(path, save(tensors, metadata={"format": "pt"}))
    return {"path": str(path), "tensors": len(tensors)}
