"""The weight mapping's vocabulary: name patterns, the rule kinds, and parsing rules from a document.

A rule is one YAML mapping whose kind is the key it has (`{rename: "transformer.**", to: "**"}`). Each kind
is defined once in RULES, with its options and doc; the `weights:` JSON Schema (schema.py), the checks
below and the table in docs/weights.md follow from it. Every kind has an inverse (rename swaps its
patterns, fuse becomes split, squeeze unsqueeze), which is how weights are saved back in the source's
layout. No torch here: `dlspec validate` reads this to build the schema.

Patterns are state-dict names with wildcards: `*` stands for part of one dotted segment (`encoder_layer_*`,
`h.*.attn`), `**` for one or more whole segments or the rest of a name (`transformer.**`). A pattern on the
other side of a rule has the same wildcards in the same order, filled with what they matched.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from dlspec.core.errors import Loc, Problem, did_you_mean

_WILDCARD = re.compile(r"\*\*|\*")


@dataclass(frozen=True)
class Pattern:
    text: str
    regex: re.Pattern = field(repr=False, compare=False)
    wildcards: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        parts, wildcards, at = [], [], 0
        for m in _WILDCARD.finditer(text):
            parts.append(re.escape(text[at:m.start()]))
            parts.append("(.+)" if m.group() == "**" else "([^.]+)")
            wildcards.append(m.group())
            at = m.end()
        parts.append(re.escape(text[at:]))
        return cls(text, re.compile("".join(parts)), tuple(wildcards))

    def match(self, key: str) -> tuple[str, ...] | None:
        m = self.regex.fullmatch(key)
        return m.groups() if m else None

    def fill(self, captures: tuple[str, ...]) -> str:
        values = iter(captures)
        return _WILDCARD.sub(lambda m: next(values), self.text)


@dataclass(frozen=True)
class Rule:
    """One parsed rule. `sources` are matched against the names as they are when the rule runs; `targets`
    are what a rename, fuse or split makes of them."""
    kind: str
    sources: tuple[Pattern, ...]
    targets: tuple[Pattern, ...] = ()
    dim: int = 0
    sizes: tuple[int, ...] | None = None  # split (and fuse, when saved back): the parts' sizes along dim
    shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # reshape: (checkpoint shape, model shape)
    where: str = ""  # "preset torchvision, rule 3" or the file:line:col of the rule
    loc: Loc | None = None

    def inverse(self) -> "Rule | None":
        """The rule that undoes this one (None: nothing to undo, an ignored name is not written back)."""
        return RULES[self.kind].invert(self)


@dataclass(frozen=True)
class RuleKind:
    name: str
    doc: str
    example: str
    value: str  # what the kind's own key holds: "pattern" or "patterns"
    options: tuple[tuple[str, str], ...]  # (option, doc): the other keys it takes
    invert: Callable[[Rule], Rule | None]
    required: tuple[str, ...] = ()


def _swap(rule: Rule, kind: str) -> Rule:
    return Rule(kind, rule.targets, rule.sources, rule.dim, rule.sizes, rule.shapes, rule.where, rule.loc)


def _same(rule: Rule) -> Rule:
    return rule


def _flip_shapes(rule: Rule) -> Rule:
    return Rule(rule.kind, rule.sources, (), rule.dim, None, (rule.shapes[1], rule.shapes[0]), rule.where, rule.loc)


def _other(rule: Rule, kind: str) -> Rule:
    return Rule(kind, rule.sources, (), rule.dim, None, None, rule.where, rule.loc)


_KINDS = (
    RuleKind("rename", "Rename every name the pattern matches; `to` has the same wildcards, filled in order.",
             '{rename: "transformer.**", to: "**"}', "pattern", (("to", "the new name"),),
             lambda r: _swap(r, "rename"), ("to",)),
    RuleKind("ignore", "Leave out every checkpoint tensor the pattern matches (reported as ignored).",
             '{ignore: "cls.**"}', "pattern", (), lambda r: None),
    RuleKind("transpose", "Transpose 2-D tensors (Hugging Face GPT-2's Conv1D stores Linear weights as [in, out]).",
             '{transpose: "h.*.mlp.c_fc.weight"}', "pattern", (), _same),
    RuleKind("squeeze", "Drop a size-1 dim (`dim`, default 0): a [1, 197, 768] position table becomes [197, 768].",
             '{squeeze: "encoder.pos_embedding"}', "pattern", (("dim", "the dim to drop (default 0)"),),
             lambda r: _other(r, "unsqueeze")),
    RuleKind("unsqueeze", "Insert a size-1 dim at `dim` (default 0).", '{unsqueeze: "cls_token", dim: 0}', "pattern",
             (("dim", "where the new dim goes (default 0)"),), lambda r: _other(r, "squeeze")),
    RuleKind("reshape", "Reshape from the checkpoint's shape `from` to the model's `to` (-1: any size, once per shape).",
             '{reshape: "patch.weight", from: [768, 768], to: [768, 3, 16, 16]}', "pattern",
             (("from", "the checkpoint's shape"), ("to", "the model's shape")), _flip_shapes, ("from", "to")),
    RuleKind("fuse", "Concatenate tensors along `dim` (default 0), in the order listed, into one (q, k, v -> qkv). "
                     "Saved back, it splits into equal parts, or `sizes`.",
             '{fuse: ["*.query.weight", "*.key.weight", "*.value.weight"], to: "*.qkv.weight"}', "patterns",
             (("to", "the fused name"), ("dim", "the dim to concatenate along (default 0)"),
              ("sizes", "the parts' sizes along dim, for saving back (default: equal)")),
             lambda r: _swap(r, "split"), ("to",)),
    RuleKind("split", "Split a tensor along `dim` (default 0) into the names of `to`: into equal parts, or `sizes` "
                      "(qkv -> q, k, v).",
             '{split: "*.qkv.weight", to: ["*.q.weight", "*.k.weight", "*.v.weight"]}', "pattern",
             (("to", "the parts' names, in order"), ("dim", "the dim to split (default 0)"),
              ("sizes", "the parts' sizes along dim (default: equal)")), lambda r: _swap(r, "fuse"), ("to",)),
)
RULES: dict[str, RuleKind] = {k.name: k for k in _KINDS}
_OPTIONS = ("to", "dim", "sizes", "from")


def parse_rule(raw: Any, where: str, locate: Callable[[tuple], Loc | None], path: tuple) -> tuple[Rule | None, list[Problem]]:
    """A rule from its document form, or the problems that keep it from being one (located at `path`)."""
    def problem(message: str, sub: tuple = (), expected: str | None = None, hint: str | None = None) -> list[Problem]:
        return [Problem(message, locate(path + sub), _dotted(path + sub), expected, hint)]

    if not isinstance(raw, Mapping):
        return None, problem(f"a rule is a mapping such as {RULES['rename'].example}", expected="a mapping")
    kinds = [k for k in raw if k in RULES]
    if len(kinds) != 1:
        return None, problem("a rule has one kind, " + (f"not {', '.join(kinds)}" if kinds else "and this one has none"),
                             expected=", ".join(RULES), hint=did_you_mean(next(iter(raw), ""), list(RULES)))
    kind = RULES[kinds[0]]
    allowed = {name for name, _ in kind.options}
    for key in raw:
        if key != kind.name and key not in allowed:
            return None, problem(f"a {kind.name} rule takes no '{key}'", (key,),
                                 expected=", ".join(sorted(allowed)) or "no options", hint=did_you_mean(key, allowed))
    for key in kind.required:
        if key not in raw:
            return None, problem(f"a {kind.name} rule needs '{key}'", hint=f"for example {kind.example}")
    value = raw[kind.name]
    many = kind.value == "patterns"
    sources = _patterns(value, many, (kind.name,), problem)
    targets = _patterns(raw["to"], kind.name == "split", ("to",), problem) if "to" in raw and kind.name != "reshape" else ()
    if isinstance(sources, list) or isinstance(targets, list):
        return None, (sources if isinstance(sources, list) else []) + (targets if isinstance(targets, list) else [])
    shape = sources[0].wildcards
    for p, sub in [(p, (kind.name,)) for p in sources] + [(p, ("to",)) for p in targets]:
        if p.wildcards != shape:
            return None, problem(f"'{p.text}' has the wildcards {''.join(p.wildcards) or 'none'}, but "
                                 f"'{sources[0].text}' has {''.join(shape) or 'none'}", sub,
                                 expected="the same wildcards (* and **) in the same order on both sides")
    dim = raw.get("dim", 0)
    sizes = raw.get("sizes")
    ints = {"dim": isinstance(dim, int) and not isinstance(dim, bool),
            "sizes": sizes is None or _ints(sizes, 1)}
    if kind.name == "reshape":
        ints.update({"from": _ints(raw["from"], -1), "to": _ints(raw["to"], -1)})
    for key, ok in ints.items():
        if not ok:
            return None, problem(f"{key} must be {'an integer' if key == 'dim' else 'a list of integers'}", (key,))
    shapes = None
    if kind.name == "reshape":
        shapes = (tuple(raw["from"]), tuple(raw["to"]))
        for side, s in zip(("from", "to"), shapes):
            if list(s).count(-1) > 1 or any(d < 1 and d != -1 for d in s):
                return None, problem(f"{side} must be sizes of at least 1, with at most one -1", (side,))
    if sizes is not None and kind.name in ("fuse", "split"):
        parts = len(sources) if kind.name == "fuse" else len(targets)
        if len(sizes) != parts:
            return None, problem(f"sizes has {len(sizes)} values for {parts} parts", ("sizes",))
    return Rule(kind.name, tuple(sources), tuple(targets), dim, tuple(sizes) if sizes else None, shapes, where,
                locate(path)), []


def _ints(value: Any, least: int) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= least for v in value)


def _patterns(value: Any, many: bool, sub: tuple, problem) -> tuple[Pattern, ...] | list[Problem]:
    values = value if many else [value]
    if not isinstance(values, list) or (many and len(values) < 2) or not all(isinstance(v, str) and v for v in values):
        return problem("expected " + ("a list of two or more names or patterns" if many else "a name or pattern"),
                       sub, hint='wildcards: * (part of one segment), ** (the rest); quote them: "h.*.attn"')
    return tuple(Pattern.parse(v) for v in values)


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def rule_schema() -> dict[str, Any]:
    """JSON Schema of one rule: every kind's key and option in one closed object; parse_rule checks the
    combination, so an error can name the kind an option belongs to."""
    name = {"type": "string", "minLength": 1}
    props: dict[str, Any] = {}
    for kind in RULES.values():
        one = {**name, "description": f"{kind.doc} e.g. `{kind.example}`"}
        props[kind.name] = one if kind.value == "pattern" else {
            "type": "array", "items": name, "minItems": 2, "description": one["description"]}
    props["to"] = {"type": ["string", "array"], "items": {"type": ["string", "integer"]},
                   "description": "rename: the new name; fuse: the fused name; split: the parts' names; "
                                  "reshape: the model's shape."}
    props["from"] = {"type": "array", "items": {"type": "integer"}, "description": "reshape: the checkpoint's shape."}
    props["dim"] = {"type": "integer", "description": "squeeze, unsqueeze, fuse, split: the dim (default 0)."}
    props["sizes"] = {"type": "array", "items": {"type": "integer", "minimum": 1},
                      "description": "fuse, split: the parts' sizes along dim (default: equal parts)."}
    return {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": props,
            "description": "One mapping rule; its kind is the key it has: " + ", ".join(RULES) + "."}
