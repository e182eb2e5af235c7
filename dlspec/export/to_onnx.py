"""ONNX through torch's dynamo-based exporter, checked and run with ONNX Runtime.

The exporter converts the shared torch.export program, so ONNX and .pt2 come
from one trace. Its symbolic axes (s27, s31) are renamed to the spec's dims, the
provenance goes into metadata_props, and the file must pass the full
onnx.checker and strict shape inference before it replaces an older one.
"""
from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from dlspec.core.reading import open_checked

from .files import publish, staging, without_stack_traces
from .provenance import from_onnx_metadata, to_onnx_metadata
from .quiet import quiet

# Protobuf cannot serialise a message of 2 GiB or more. Past this many bytes of weights
# (1.5 GiB, torch's own threshold: headroom for the graph) they go to a `<file>.onnx.data`
# file beside the model, as ONNX's external data. A module value so tests can lower it.
EXTERNAL_DATA_THRESHOLD = 3 * 2**29
_PROTOBUF_LIMIT = 2**31 - 1


def write(job, path: Path) -> tuple[str, str]:
    spec = job.spec
    exported = job.exported()
    with quiet(), without_stack_traces(exported):
        program = torch.onnx.export(
            exported, job.example_inputs, dynamo=True, opset_version=job.config.opset,
            input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
            optimize=True, verbose=False)
    program.rename_axes(_axis_names(program, spec, job.config.dynamic))
    program.model.metadata_props.update(to_onnx_metadata(job.record))
    external = _external(job.config.external_data, _weight_bytes(program))
    data = path.with_name(path.name + ".data")  # the name torch's exporter gives external data
    with staging(path.parent) as tmp:
        staged = tmp / path.name
        with quiet():
            program.save(staged, external_data=external)
        external = staged.with_name(data.name).exists()  # what was written (torch may decide so too)
        check(staged, spec)
        if external:  # the weights first, so the new model never points at missing data
            publish(staged.with_name(data.name), data)
        publish(staged, path)
    if not external and data.exists():  # an older export's weights, which the new file does not use
        data.unlink()
    return f"opset {job.config.opset}", f"weights in {data.name}" if external else ""


def _weight_bytes(program) -> int:
    return sum(v.const_value.nbytes for v in program.model.graph.initializers.values() if v.const_value is not None)


def _external(setting: bool | None, size: int) -> bool:
    """export.external_data if the spec sets it, else whether the weights need it."""
    if setting is False and size > _PROTOBUF_LIMIT:
        raise ValueError(f"the weights take {size / 2**30:.1f} GiB, past protobuf's 2 GiB limit, and "
                         "export.external_data is false: set it to true or leave it out")
    return setting if setting is not None else size > EXTERNAL_DATA_THRESHOLD


def check(path: Path, spec) -> None:
    """Full onnx.checker, strict shape inference, and inferred outputs of the spec's ranks.

    Given the path (not a loaded proto) so models with external data are checked too."""
    onnx.checker.check_model(str(path), full_check=True)
    inferred = path.with_name(path.name + ".inferred")
    onnx.shape_inference.infer_shapes_path(str(path), str(inferred), check_type=True, strict_mode=True,
                                           data_prop=True)
    graph = onnx.load(str(inferred), load_external_data=False).graph
    inferred.unlink()
    for output, expected in zip(graph.output, spec.outputs):
        rank = len(output.type.tensor_type.shape.dim)
        if rank != len(expected.shape):
            raise ValueError(f"shape inference gives output '{output.name}' rank {rank}, "
                             f"the spec says {len(expected.shape)} ({list(expected.shape)})")


def load(path: Path, spec):
    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors come back as exceptions; keep ORT's own log quiet
    # As many threads as torch uses, so a user's (or a test's) torch.set_num_threads holds for both
    # runtimes and latency comparisons are like for like.
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # An input the model never reads is dropped by the exporter: feed only the ones it has.
    names = [i.name for i in session.get_inputs()]
    outputs = [t.name for t in spec.outputs]

    def run(inputs: dict[str, torch.Tensor]):
        return tuple(session.run(outputs, {name: inputs[name].numpy() for name in names}))
    return run


def read_record(path: Path) -> dict | None:
    model = read_model(path)
    return from_onnx_metadata({p.key: p.value for p in model.metadata_props})


def read_model(path: Path) -> onnx.ModelProto:
    """The model proto of a user's file, its type and size checked first; external data is not read."""
    with open_checked(path, _PROTOBUF_LIMIT, what="ONNX models") as handle:
        return onnx.load_from_string(handle.read())


def _axis_names(program, spec, dynamic: tuple[str, ...]) -> dict:
    """The exporter's symbol of each input axis that is exactly a dynamic dim -> that dim's name.

    Axes written as expressions (`T + 1`) are renamed by substitution of their root."""
    mapping = {}
    inputs = {value.name: value for value in program.model.graph.inputs}
    for tensor in spec.inputs:
        value = inputs.get(tensor.name)
        if value is None or value.shape is None:
            continue
        for axis, entry in enumerate(tensor.shape):
            symbol = value.shape[axis]
            if isinstance(entry, str) and entry in dynamic and isinstance(getattr(symbol, "value", None), str):
                mapping[symbol.value] = entry
    return mapping
