"""Keep exporter chatter out of the user's terminal.

torch.onnx, torch.export and TorchScript warn freely (TorchScript is deprecated
upstream, pytree deprecations, "torchvision is not installed"); dlspec reports
what matters itself (which TorchScript method was used, parity, errors), so
these are silenced while dlspec drives them.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "torch.jit", "onnxscript")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
