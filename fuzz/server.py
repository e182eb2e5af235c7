"""The fork server of fuzz.harness: one JSON case per line on stdin, one JSON outcome per line on stdout."""
from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path


def _child(case: dict, folder: Path, memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    for name, content in case["files"].items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes.fromhex(content) if name in case["binary"] else content.encode("utf-8", "surrogatepass"))
    os.chdir(folder)
    err = open(folder / ".stderr", "w")
    os.dup2(err.fileno(), 2)
    sys.stderr = err
    sys.stdout = io.StringIO()
    from dlspec.cli import main
    try:
        code = main(case["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - anything main lets out is a crash of the case
        print(f"Traceback (escaped main): {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 4
    err.flush()
    os._exit(code)


def serve(memory_mb: int, timeout_s: float) -> None:
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401

    import dlspec.cli  # noqa: F401 - everything a case needs is imported once, before forking
    import dlspec.export.api  # noqa: F401
    import dlspec.train.loop  # noqa: F401
    memory_bytes = memory_mb * 2**20 + _mapped()
    print("ready", flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        folder = Path(tempfile.mkdtemp(prefix="dlspec-fuzz-"))
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(case, folder, memory_bytes)
        status, killed = None, False
        while status is None:
            done, status_word = os.waitpid(pid, os.WNOHANG)
            if done:
                status = status_word
            elif time.perf_counter() - start > timeout_s:
                os.kill(pid, signal.SIGKILL)
                killed = True
                _, status = os.waitpid(pid, 0)
            else:
                time.sleep(0.005)
        stderr = (folder / ".stderr").read_text(errors="replace") if (folder / ".stderr").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if killed:
            sig, code = signal.SIGKILL, None
        print(json.dumps({"code": code, "signal": sig, "timeout": killed, "stderr": stderr[-4000:],
                          "seconds": round(time.perf_counter() - start, 3)}), flush=True)


def _mapped() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]))
