"""The model card: README.md beside the exported files, for the engineer who receives them.

It says what the files take and give (shapes with their dynamic axes, dtypes, the spec's docs), what
preprocessing they apply or expect, the class names, where the weights came from, how the files were
checked (the parity report), and gives a short ONNX Runtime script that runs as written from the folder.
"""
from __future__ import annotations

import json

from dlspec.front.spec import concrete_shape

from .parity import ParityReport
from .preprocess import PREPROCESS_FILE, Preprocessing
from .report import human_size, table
from .weights import describe

_SHOWN_CLASSES = 100


def render(report: ParityReport, record: dict, prep: Preprocessing | None, sizes: dict[str, int]) -> str:
    """The card of the files `report` checked, which carry `record`; `sizes` are the dim sizes the script's
    example inputs take."""
    spec = record["spec"]
    lines = [f"# {record['spec_name']}", ""]
    if spec.get("description"):
        lines += [str(spec["description"]), ""]
    lines += [f"Exported by dlspec {record['dlspec_version']} (torch {record['torch_version']}) from the spec "
              f"`{record['spec_name']}` (hash `{record['spec_hash']}`); {describe(record['weights'])}"
              + (f" (sha256 `{record['weights']['sha256']}`)" if record["weights"].get("sha256") else "") + ".", ""]
    lines += _files(report) + _tensors("Inputs", record["inputs"], prep) + _tensors("Outputs", record["outputs"])
    lines += _preprocessing(report, prep) + _classes(prep)
    onnx = next((a.file for a in report.artifacts if a.format == "onnx" and a.variant is None), None)
    if onnx is not None:
        lines += ["## Run it with ONNX Runtime", "", "From this folder:", "", "```python",
                  snippet(onnx.name, record, prep, sizes), "```", ""]
    lines += ["## Parity", "", "Each file was run in its own runtime and compared with the eager PyTorch model "
              "(`dlspec verify FILE --spec SPEC --checkpoint ...` checks it again):", "", "```", table(report), "```", ""]
    return "\n".join(lines)


def _files(report: ParityReport) -> list[str]:
    rows = ["## Files", "", "| file | format | made by | size | sha256 |", "|---|---|---|---|---|"]
    for a in report.artifacts:
        rows.append(f"| `{a.file.name}` | {a.format} | {a.method} | {human_size(a.size)} | `{a.hashes.get('sha256', '')[:16]}` |")
    return rows + [""]


def _tensors(title: str, tensors: list[dict], prep: Preprocessing | None = None) -> list[str]:
    rows = [f"## {title}", "", "| name | shape | dtype | dynamic axes | description |", "|---|---|---|---|---|"]
    for t in tensors:
        doc = t.get("doc") or ""
        step = prep.step(t["name"]) if prep is not None else None
        if step is not None and prep.embedded:
            doc = f"as the data set gives it (field `{step.field}`); the file applies the preprocessing. {doc}".strip()
        elif step is not None and not step.identity:
            doc = f"field `{step.field}` after the preprocessing of {PREPROCESS_FILE}. {doc}".strip()
        shape = "[" + ", ".join(map(str, t["shape"])) + "]"
        rows.append(f"| `{t['name']}` | {shape} | {t['dtype']} | {', '.join(t['dynamic']) or 'none'} | {doc} |")
    return rows + [""]


def _preprocessing(report: ParityReport, prep: Preprocessing | None) -> list[str]:
    if not report.preprocessing:
        return ["## Preprocessing", "", "None: the files take the model's inputs as they are.", ""]
    head = ("The files take inputs as the data set gives them and apply what training applied:" if prep.embedded else
            f"Apply before running the files (the numbers are in `{PREPROCESS_FILE}` and in the files' metadata, "
            "`dlspec.preprocessing`):")
    return ["## Preprocessing", "", head, ""] + [f"- {line}" for line in report.preprocessing[1:]] + \
        ["", f"The numbers are {prep.source}.", ""]


def _classes(prep: Preprocessing | None) -> list[str]:
    if prep is None or prep.labels is None:
        return []
    names = prep.labels.names
    shown = ", ".join(f"{i}: `{n}`" for i, n in enumerate(names[:_SHOWN_CLASSES]))
    more = f", ... ({len(names)} in all)" if len(names) > _SHOWN_CLASSES else ""
    return ["## Classes", "", f"Output `{prep.labels.output}` scores {len(names)} classes on its last dim; class i is "
            "named (also in the metadata, `dlspec.classes`):", "", shown + more, ""]


def snippet(file: str, record: dict, prep: Preprocessing | None, sizes: dict[str, int]) -> str:
    """An ONNX Runtime script that runs as written in the export folder: inputs of the right shape and dtype
    (replace them with your data), the preprocessing where it is external, the top classes where there are some."""
    external = prep is not None and not prep.embedded and not prep.identity
    code = ["import json" if external else None, "import numpy as np", "import onnxruntime as ort", "",
            f'session = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])']
    if external:
        code.append(f'steps = json.load(open("{PREPROCESS_FILE}"))["inputs"]')
    feed = []
    for t in record["inputs"]:
        shape = concrete_shape(tuple(t["shape"]), sizes)
        fill = "np.ones" if t["dtype"] == "bool" else "np.zeros"
        code.append(f"{t['name']} = {fill}({shape}, dtype=np.{t['dtype']})  # {_shape(t['shape'])}: your data here")
        step = prep.step(t["name"]) if external else None
        if step is not None and step.mean is not None:
            axis = f".reshape(1, -1{', 1' * (len(t['shape']) - 2)})" if len(step.mean) > 1 else ""
            code.append(f"{t['name']} = ({t['name']} - np.float32(steps['{t['name']}']['mean']){axis}) "
                        f"/ np.float32(steps['{t['name']}']['std']){axis}")
        feed.append(f'"{t["name"]}": {t["name"]}')
    names = [o["name"] for o in record["outputs"]]
    code.append(f"outputs = dict(zip({json.dumps(names)}, session.run(None, {{{', '.join(feed)}}})))")
    labels = prep.labels if prep is not None else None
    if labels is not None:
        code += ['classes = json.loads(session.get_modelmeta().custom_metadata_map["dlspec.classes"])',
                 f'scores = outputs["{labels.output}"].reshape(-1, len(classes))[-1]  # the last example (or position)',
                 "print([(classes[i], float(scores[i])) for i in np.argsort(-scores)[:3]])"]
        if not external:
            code.insert(0, "import json")
    else:
        code.append("print({name: value.shape for name, value in outputs.items()})")
    return "\n".join(line for line in code if line is not None)


def _shape(shape: list) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"
