"""Smaller ONNX files made from the fp32 one (`export.variants`), and the size and ONNX Runtime latency of each.

Each variant is written beside `<name>.onnx` as `<name>.<variant>.onnx`, with the fp32 file's provenance
plus `dlspec.variant`, and is checked against the fp32 eager model like the other files (its random-input
differences reported, its agreement on real data judged by its own tolerance). Both tools are deterministic,
so `dlspec verify` re-derives a variant and compares it exactly, as it does the fp32 file.

Adding a variant is a function here, an entry in MAKERS, and its name, description and default agreement in
`schema.VARIANTS` (a test checks that the two agree).
"""
from __future__ import annotations

import contextlib
import logging
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from .files import publish, staging
from .quiet import quiet


def _fp16(fp32: Path, staged: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16
    # float32 in and out: a caller feeds the same arrays; inside, everything is float16, the preprocessing too
    # (raw values past 65504 would overflow, which the real-data check would report)
    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(_sorted(model), str(staged))


def _int8_dynamic(fp32: Path, staged: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    # without the exporter's inferred shapes: the quantiser infers its own, and older ones (onnxruntime 1.19)
    # turn a Gemm into a MatMul of the transposed weight, which then contradicts the kept shape
    source = onnx.load(str(fp32))
    del source.graph.value_info[:]
    bare = staged.with_name("fp32-" + staged.name)
    onnx.save(source, str(bare))
    # uint8 weights: onnxruntime's CPU ConvInteger takes no int8 weights before 1.23, so a file made with int8 ones
    # would not load in the older runtimes a deployment may have (MatMulInteger takes either)
    quantize_dynamic(str(bare), str(staged), weight_type=QuantType.QUInt8)
    bare.unlink()


MAKERS: dict[str, Callable[[Path, Path], None]] = {"fp16": _fp16, "int8_dynamic": _int8_dynamic}


def suffix(kind: str) -> str:
    return f".{kind}.onnx"


def write(kind: str, fp32: Path, path: Path, metadata: dict[str, str]) -> None:
    """`<name>.<kind>.onnx` from the fp32 file, with its metadata plus `dlspec.variant`."""
    with staging(path.parent) as tmp, quiet(), _quiet_root_logger():
        staged = tmp / path.name
        MAKERS[kind](fp32, staged)
        model = onnx.load(str(staged))
        del model.metadata_props[:]
        model.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in metadata.items())
        onnx.save(model, str(staged))
        onnx.checker.check_model(str(staged), full_check=True)
        publish(staged, path)


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph's nodes in an order where each comes after the nodes it reads (the converter appends its casts
    at the end); otherwise in their order."""
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise ValueError("the float16 graph has a cycle")
        for node in ready:
            known.update(node.output)
        ordered += ready
        pending = [n for n in pending if not any(n is r for r in ready)]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


@contextlib.contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantiser advises through the root logger ("consider pre-processing"): not for our users."""
    level = logging.root.level
    logging.root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.root.setLevel(level)


def latency(paths: list[Path], feeds: list[dict[str, np.ndarray]], threads: int, rounds: int = 15) -> dict[str, list[float]]:
    """Median milliseconds of one ONNX Runtime run (CPU, `threads` threads) of each file on each feed, the files
    measured side by side, round by round, so that a busy moment of the machine is shared by all."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = threads
    sessions = {p.name: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths}
    inputs = {name: [{k: v for k, v in feed.items() if k in {i.name for i in s.get_inputs()}} for feed in feeds]
              for name, s in sessions.items()}
    times: dict[str, list[list[float]]] = {name: [[] for _ in feeds] for name in sessions}
    for round_ in range(rounds + 2):  # the first two rounds warm up: first runs allocate
        for name, session in sessions.items():
            for i, feed in enumerate(inputs[name]):
                start = time.perf_counter()
                session.run(None, feed)
                if round_ >= 2:
                    times[name][i].append(time.perf_counter() - start)
    return {name: [statistics.median(t) * 1e3 for t in per_feed] for name, per_feed in times.items()}
