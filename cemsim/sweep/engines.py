"""Engines evaluate point tasks and yield outcomes as they finish, in any order; the runner stores them.

local: a process pool (forkserver, so workers start clean even while the progress bar's thread runs).
ray:   tasks on an existing Ray cluster (``address``) or on a Ray started for this run and shut down after.
       A remote cluster's workers need cemsim installed (and the trace at the same path); results come back
       to this process, which alone writes the results store.
Both call worker.run_task, so a point gives the same row whichever engine ran it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from cemsim.errors import CemsimError
from cemsim.sweep.expand import PointTask
from cemsim.sweep.worker import Outcome, resolve_callable, run_task

ENGINES = ("local", "ray")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def run_inline(tasks: list[PointTask], evaluate: str) -> Iterator[Outcome]:
    for task in tasks:
        yield run_task(evaluate, task)


# One thread per worker process for the numeric libraries, as Ray does for a num_cpus=1 task: N workers that
# each start N BLAS / OpenMP / Numba threads oversubscribe the cores (measured: the local pool was 20-25%
# slower than Ray on 2 cores until this was set).
THREAD_LIMITS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in THREAD_LIMITS}
    for k in THREAD_LIMITS:
        os.environ.setdefault(k, "1")  # a value the user set wins
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_local(tasks: list[PointTask], evaluate: str, workers: int) -> Iterator[Outcome]:
    resolve_callable(evaluate)  # a bad import path fails here, once, with a clear message
    if workers <= 1 or len(tasks) <= 1:
        yield from run_inline(tasks, evaluate)
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["cemsim.sweep.worker", evaluate.partition(":")[0]])
    with (
        _single_threaded_children(),
        ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool,
    ):
        pending = {pool.submit(run_task, evaluate, t) for t in tasks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        except BrokenProcessPool:
            raise CemsimError(
                "a sweep worker process died (killed, or out of memory); the points it finished "
                "are kept: run the same command again to resume"
            ) from None
        finally:
            for fut in pending:
                fut.cancel()


def run_ray(
    tasks: list[PointTask], evaluate: str, workers: int | None, address: str | None
) -> Iterator[Outcome]:
    try:
        import ray
    except ImportError:
        raise CemsimError("the Ray engine needs the optional extra: pip install 'cemsim[ray]'") from None
    resolve_callable(evaluate)
    # Workers see the driver's import path, so evaluate functions outside the package work (on a cluster
    # whose nodes share this file system; other clusters need the package installed on every node).
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
    if address:
        try:
            ray.init(address=address, log_to_driver=False, runtime_env=runtime_env, ignore_reinit_error=True)
        except ConnectionError as exc:
            raise CemsimError(
                f"could not connect to a Ray cluster at {address} ({exc}); start one there with "
                "`ray start --head`, or leave --address out to run Ray on this machine",
                where="--address",
            ) from None
    else:
        ray.init(
            num_cpus=workers or default_workers(),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=runtime_env,
            ignore_reinit_error=True,
        )
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        refs = [remote.remote(evaluate, t) for t in tasks]
        try:
            while refs:
                done, refs = ray.wait(refs, num_returns=1)
                yield ray.get(done[0])
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
    finally:
        ray.shutdown()


def run_engine(
    engine: str, tasks: list[PointTask], evaluate: str, workers: int | None = None, address: str | None = None
) -> Iterator[Outcome]:
    if engine == "local":
        return run_local(tasks, evaluate, workers or default_workers())
    if engine == "ray":
        return run_ray(tasks, evaluate, workers, address)
    raise CemsimError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
