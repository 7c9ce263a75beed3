"""What runs on a worker (pool process or Ray task): import the evaluate function, run one point, and turn
the outcome into plain data. A CemsimError from the simulator is a result of the point ("error", stored);
any other exception is a bug ("failed", reported and retried on the next run)."""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable
from functools import cache
from typing import Any

from cemsim.errors import CemsimError
from cemsim.sweep.expand import PointTask

Outcome = dict[str, Any]


@cache
def resolve_callable(path: str) -> Callable[[PointTask], dict[str, Any]]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CemsimError(
            f"evaluate function {path!r}: cannot import module {module_name!r} ({exc})"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise CemsimError(f"evaluate function {path!r}: module {module_name!r} has no callable {attr!r}")
    return fn


def run_task(evaluate: str, task: PointTask) -> Outcome:
    start = time.perf_counter()
    try:
        result = resolve_callable(evaluate)(task)
        if not isinstance(result, dict):
            raise TypeError(f"{evaluate} returned {type(result).__name__}, expected a dict")
        status, error = "ok", None
    except CemsimError as exc:
        result, status, error = None, "error", str(exc)
    except Exception:
        result, status, error = None, "failed", traceback.format_exc(limit=8)
    return {
        "point_id": task.point_id,
        "status": status,
        "result": result,
        "error": error,
        "elapsed_s": time.perf_counter() - start,
    }
