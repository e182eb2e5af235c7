"""Running the rules: a checkpoint's tensors, by name, become the model's, and back.

Tensors stay lazy (`Lazy`: a shape and how to read it) until every name and shape has been checked, so a
mistake in a 13 GB checkpoint is found before a byte of it is read, and reading is one tensor at a time.
`apply` runs rules in order and collects every problem, each at its rule's line; `inverse` gives the rules
that undo a mapping (saving weights back in the source's layout).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

from dlspec.core.errors import Problem

from .rules import Rule


@dataclass(frozen=True)
class Lazy:
    shape: tuple[int, ...]
    read: Callable[[], Any]  # -> torch.Tensor
    origin: tuple[str, ...]  # the checkpoint names it comes from
    rules: tuple[str, ...] = ()  # where each rule that changed it is


def inverse(rules: list[Rule]) -> list[Rule]:
    return [r.inverse() for r in reversed(rules) if r.inverse() is not None]


def apply(tensors: dict[str, Lazy], rules: list[Rule]) -> tuple[dict[str, Lazy], dict[str, Rule], list[Problem]]:
    """(the mapped tensors, the names each ignore rule dropped, the problems) after every rule, in order."""
    ignored: dict[str, Rule] = {}
    problems: list[Problem] = []
    for rule in rules:
        tensors = _RUN[rule.kind](rule, tensors, ignored, problems)
    return tensors, ignored, problems


def _problem(rule: Rule, message: str, hint: str | None = None) -> Problem:
    where = "" if rule.loc else f" ({rule.where})"
    return Problem(f"{rule.kind} rule{where}: {message}", rule.loc, hint=hint)


def _changed(t: Lazy, rule: Rule, shape: tuple[int, ...], read: Callable[[], Any]) -> Lazy:
    return Lazy(shape, read, t.origin, t.rules + (rule.where,))


def _rename(rule, tensors, ignored, problems):
    out: dict[str, Lazy] = {}
    for name, t in tensors.items():
        captures = rule.sources[0].match(name)
        new = rule.targets[0].fill(captures) if captures is not None else name
        if new in out:
            problems.append(_problem(rule, f"'{name}' would become '{new}', a name another tensor already has"))
            continue
        out[new] = replace(t, rules=t.rules + (rule.where,)) if captures is not None else t
    return out


def _ignore(rule, tensors, ignored, problems):
    out = {}
    for name, t in tensors.items():
        if rule.sources[0].match(name) is None:
            out[name] = t
        else:
            for origin in t.origin:
                ignored[origin] = rule
    return out


def _each(change: Callable[[Rule, str, Lazy], Lazy | str]):
    """A rule that changes each matched tensor on its own; `change` returns the new Lazy or a problem."""
    def run(rule, tensors, ignored, problems):
        out = {}
        for name, t in tensors.items():
            if rule.sources[0].match(name) is None:
                out[name] = t
                continue
            changed = change(rule, name, t)
            if isinstance(changed, str):
                problems.append(_problem(rule, changed))
            else:
                out[name] = changed
        return out
    return run


def _transpose(rule, name, t):
    if len(t.shape) != 2:
        return f"'{name}' is {list(t.shape)}; transpose takes 2-D tensors"
    return _changed(t, rule, t.shape[::-1], lambda: t.read().t())


def _squeeze(rule, name, t):
    dim = rule.dim % len(t.shape) if t.shape and -len(t.shape) <= rule.dim < len(t.shape) else None
    if dim is None or t.shape[dim] != 1:
        return f"'{name}' is {list(t.shape)}: dim {rule.dim} is not of size 1"
    return _changed(t, rule, t.shape[:dim] + t.shape[dim + 1:], lambda: t.read().squeeze(dim))


def _unsqueeze(rule, name, t):
    if not -len(t.shape) - 1 <= rule.dim <= len(t.shape):
        return f"'{name}' is {list(t.shape)}: there is no dim {rule.dim} to insert"
    dim = rule.dim % (len(t.shape) + 1)
    return _changed(t, rule, t.shape[:dim] + (1,) + t.shape[dim:], lambda: t.read().unsqueeze(dim))


def _reshape(rule, name, t):
    before, after = rule.shapes
    if len(before) != len(t.shape) or any(b not in (-1, s) for b, s in zip(before, t.shape)):
        return f"'{name}' is {list(t.shape)}, not {list(before)}"
    size = math.prod(t.shape)
    known = math.prod(d for d in after if d != -1)
    if (-1 in after and size % known) or (-1 not in after and known != size):
        return f"'{name}' has {size:,} values, which do not make {list(after)}"
    shape = tuple(size // known if d == -1 else d for d in after)
    return _changed(t, rule, shape, lambda: t.read().reshape(shape))


def _fuse(rule, tensors, ignored, problems):
    groups: dict[tuple, dict[int, str]] = {}
    for name in tensors:
        for i, pattern in enumerate(rule.sources):
            captures = pattern.match(name)
            if captures is not None:
                groups.setdefault(captures, {})[i] = name
                break
    out = dict(tensors)
    for captures, parts in groups.items():
        if len(parts) < len(rule.sources):
            absent = [rule.sources[i].fill(captures) for i in range(len(rule.sources)) if i not in parts]
            problems.append(_problem(rule, f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} not in the "
                                           f"checkpoint, so {', '.join(parts.values())} cannot be fused"))
            continue
        pieces = [tensors[parts[i]] for i in range(len(rule.sources))]
        shapes = [p.shape for p in pieces]
        dim = rule.dim
        if any(len(s) != len(shapes[0]) or not -len(s) <= dim < len(s) for s in shapes) or any(
                s[:dim % len(s)] + s[dim % len(s) + 1:] != shapes[0][:dim % len(s)] + shapes[0][dim % len(s) + 1:]
                for s in shapes):
            problems.append(_problem(rule, f"{', '.join(parts.values())} are {', '.join(str(list(s)) for s in shapes)}: "
                                           f"they do not concatenate along dim {dim}"))
            continue
        for name in parts.values():
            del out[name]
        d = dim % len(shapes[0])
        shape = shapes[0][:d] + (sum(s[d] for s in shapes),) + shapes[0][d + 1:]

        def read(pieces=pieces, d=d):
            import torch
            return torch.cat([p.read() for p in pieces], dim=d)
        target = rule.targets[0].fill(captures)
        if target in out:
            problems.append(_problem(rule, f"the fused '{target}' is a name another tensor already has"))
            continue
        out[target] = Lazy(shape, read, sum((p.origin for p in pieces), ()),
                           tuple(dict.fromkeys(sum((p.rules for p in pieces), ()) + (rule.where,))))
    return out


def _split(rule, tensors, ignored, problems):
    out = {}
    for name, t in tensors.items():
        captures = rule.sources[0].match(name)
        if captures is None:
            out[name] = t
            continue
        n = len(rule.targets)
        if not t.shape or not -len(t.shape) <= rule.dim < len(t.shape):
            problems.append(_problem(rule, f"'{name}' is {list(t.shape)}: there is no dim {rule.dim} to split"))
            continue
        d = rule.dim % len(t.shape)
        sizes = rule.sizes or ((t.shape[d] // n,) * n if t.shape[d] % n == 0 else None)
        if sizes is None or sum(sizes) != t.shape[d]:
            problems.append(_problem(rule, f"'{name}' is {list(t.shape)}: dim {d} does not split into "
                                           f"{list(sizes) if sizes else f'{n} equal parts'}",
                                     hint="give the parts' sizes: `sizes: [...]`"))
            continue
        start = 0
        for target, size in zip(rule.targets, sizes):
            def read(t=t, start=start, size=size, d=d):
                return t.read().narrow(d, start, size)
            out[target.fill(captures)] = _changed(t, rule, t.shape[:d] + (size,) + t.shape[d + 1:], read)
            start += size
    return out


_RUN = {"rename": _rename, "ignore": _ignore, "transpose": _each(_transpose), "squeeze": _each(_squeeze),
        "unsqueeze": _each(_unsqueeze), "reshape": _each(_reshape), "fuse": _fuse, "split": _split}
