"""Keep exporter chatter out of the user's terminal.

torch.onnx, torch.export and TorchScript warn freely (TorchScript is deprecated
upstream, pytree deprecations, "torchvision is not installed"), log their own
errors, and torch.export prints the partial graph of a failed trace straight to
stderr. dlspec reports what matters itself (which TorchScript method was used,
parity, errors naming the spec node), so all of it is silenced while dlspec
drives them.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator

_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "torch.jit", "onnxscript")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)  # their errors come back to dlspec as exceptions
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
