"""The evaluation text: long English that ships with Python itself, so nothing is downloaded.

Named sources (``--text NAME``):

- ``pydoc-topics`` (the default): the *Python Language Reference* topics that every CPython installs as
  ``pydoc_data.topics`` (the text behind ``help("assignment")``; Python Software Foundation, PSF License 2.0).
  All 79 topics joined in sorted key order give about 465K characters, about 110K SmolLM2 tokens.
- ``pydoc-topics-3.11.7``: that text as Python 3.11.7 installs it, shipped in ``cemsim/data`` (the installed one
  changes between Python releases); ``cemsim demo`` captures from it.
- ``stdlib-source``: ``stdlib-docs`` followed by the standard library's Python source files (sorted paths), for
  contexts beyond what the docstrings give (about 420K tokens on Python 3.11) without repeating any text: the
  first ~420K tokens are English, the rest is code.
- ``stdlib-docs``: those topics followed by the docstrings of the standard library (modules, then their public
  classes, methods and functions), built in a fresh, isolated interpreter (``python -I``) so that nothing the
  caller imported, and nothing on its path, changes it; see :func:`stdlib_docs`. Long enough for 1M-token
  captures; its exact content depends on the Python version, so headers record its sha256.

Any UTF-8 file can replace them (``--text FILE``). See cemsim/data/README.md.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cemsim.errors import CemsimError

DEFAULT_PROVENANCE = (
    "Python Language Reference topics (pydoc_data.topics, shipped with CPython; PSF License 2.0), "
    "topics joined in sorted key order"
)
STDLIB_PROVENANCE = (
    "Python {version} documentation shipped with CPython (PSF License 2.0): pydoc_data.topics in sorted key "
    "order, then inspect.getdoc() of each public stdlib module (sorted sys.stdlib_module_names, private, test "
    "and side-effect modules skipped), its public classes (with their methods) and functions in sorted name "
    "order, each docstring once; built in an isolated interpreter"
)
SOURCE_PROVENANCE = (
    "{docs}; then the Python {version} standard library's own source files (.py under the stdlib folder, "
    "sorted by relative path, each after a '# file: PATH' line; site-packages, tests, idlelib, tkinter, "
    "turtledemo and lib2to3 left out), up to {cap:,} characters"
)
SOURCE_CAP_CHARS = 5_500_000  # about 1.4M SmolLM2 tokens on Python 3.11: enough for 1M-token captures
# The default text as Python 3.11.7 installs it, shipped in cemsim/data: the same tokens on any Python (the
# installed topics change between releases), so `cemsim demo` captures the same trace everywhere
PINNED_TOPICS = "pydoc-topics-3.11.7"
PINNED_PROVENANCE = (
    "Python 3.11.7's Language Reference topics (pydoc_data.topics, PSF License 2.0), topics joined in sorted key "
    "order, shipped as cemsim/data/pydoc-topics-3.11.7.txt"
)
TEXT_NAMES = ("pydoc-topics", PINNED_TOPICS, "stdlib-docs", "stdlib-source")

# Modules never imported for stdlib-docs: they print, open windows or browsers, need a display, or are tests.
STDLIB_SKIP = frozenset(
    {
        "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3", "ensurepip",
        "readline", "rlcompleter", "pydoc_data", "msvcrt", "winreg", "winsound", "_winapi", "nturl2path",
        "xxsubtype", "xxlimited", "xxlimited_35", "sre_compile", "sre_constants", "sre_parse",
    }
)  # fmt: skip

# Runs in ``python -I``: writes the text, UTF-8, to stdout. Module imports may print or warn; both are
# silenced (stdout is redirected while importing; the text goes to the saved binary stdout at the end).
_STDLIB_SCRIPT = r"""
import contextlib, importlib, inspect, io, pkgutil, sys, warnings
skip = set(sys.argv[1].split(","))
from pydoc_data.topics import topics
parts = [topics[k] for k in sorted(topics)]
seen = set(parts)
def add(doc):
    if doc and len(doc) >= 40 and doc not in seen:
        seen.add(doc)
        parts.append(doc)
out = sys.stdout.buffer
def quiet_import(name):
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException:
        return None
def ours(obj, name):
    m = getattr(obj, "__module__", None) or ""
    return m == name or m == "_" + name.rsplit(".", 1)[-1] or m.startswith(name + ".")
def document(mod, name):
    add(inspect.getdoc(mod))
    for attr in sorted(vars(mod)):
        if attr.startswith("_"):
            continue
        obj = vars(mod)[attr]
        if not ours(obj, name):
            continue
        if inspect.isclass(obj):
            add(inspect.getdoc(obj))
            for m in sorted(vars(obj)):
                if m.startswith("_"):
                    continue
                f = vars(obj)[m]
                if inspect.isroutine(f) or isinstance(f, (classmethod, staticmethod, property)):
                    add(inspect.getdoc(f))
        elif inspect.isroutine(obj):
            add(inspect.getdoc(obj))
def public(name):
    return not any(p.startswith("_") or p in skip or "test" in p for p in name.split("."))
for name in sorted(sys.stdlib_module_names):
    if not public(name):
        continue
    mod = quiet_import(name)
    if mod is None:
        continue
    document(mod, name)
    if hasattr(mod, "__path__"):
        subs = sorted(i.name for i in pkgutil.iter_modules(mod.__path__, name + "."))
        for sub in subs:
            if public(sub):
                m = quiet_import(sub)
                if m is not None:
                    document(m, sub)
out.write("\n\n".join(parts).encode("utf-8"))
out.flush()
"""


@dataclass(frozen=True)
class EvalText:
    text: str
    provenance: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def pydoc_topics() -> EvalText:
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distro Pythons strip pydoc_data
        raise CemsimError(
            "this Python has no pydoc_data module, cemsim's default evaluation text; pass --text FILE"
        ) from exc
    return EvalText("\n\n".join(topics[key] for key in sorted(topics)), DEFAULT_PROVENANCE)


def stdlib_docs() -> EvalText:
    """pydoc topics + stdlib docstrings (about 4-5M characters), built by a child ``python -I``."""
    version = ".".join(map(str, sys.version_info[:3]))
    try:
        res = subprocess.run(
            [sys.executable, "-I", "-c", _STDLIB_SCRIPT, ",".join(sorted(STDLIB_SKIP))],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CemsimError(f"cannot build the stdlib-docs text: {exc}", where="--text") from exc
    if res.returncode != 0 or not res.stdout:
        tail = res.stderr.decode("utf-8", "replace")[-2000:]
        raise CemsimError(
            f"building the stdlib-docs text failed (exit {res.returncode}): {tail}", where="--text"
        )
    return EvalText(res.stdout.decode("utf-8"), STDLIB_PROVENANCE.format(version=version))


def stdlib_source(cap_chars: int = SOURCE_CAP_CHARS) -> EvalText:
    """stdlib-docs, then the stdlib's .py sources in sorted path order, up to ``cap_chars`` characters."""
    import sysconfig

    docs = stdlib_docs()
    root = Path(sysconfig.get_paths()["stdlib"])
    skip_top = {"site-packages", "dist-packages", "idlelib", "tkinter", "turtledemo", "lib2to3"}
    parts, total = [docs.text], len(docs.text)
    for f in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        rel = f.relative_to(root).parts
        if rel[0] in skip_top or any("test" in part for part in rel):
            continue
        try:
            src = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(f"# file: {'/'.join(rel)}\n{src}")
        total += len(parts[-1]) + 2
        if total >= cap_chars:
            break
    text = "\n\n".join(parts)[:cap_chars]
    version = ".".join(map(str, sys.version_info[:3]))
    return EvalText(text, SOURCE_PROVENANCE.format(docs=docs.provenance, version=version, cap=cap_chars))


def load_text(path: str | Path | None = None) -> EvalText:
    """``None`` or ``"pydoc-topics"``: the default text; ``"stdlib-docs"``: the long one; else a UTF-8 file."""
    if path is None or str(path) == "pydoc-topics":
        return pydoc_topics()
    if str(path) == PINNED_TOPICS:
        pinned = Path(__file__).resolve().parents[1] / "data" / f"{PINNED_TOPICS}.txt"
        return EvalText(pinned.read_text(encoding="utf-8"), PINNED_PROVENANCE)
    if str(path) == "stdlib-docs":
        return stdlib_docs()
    if str(path) == "stdlib-source":
        return stdlib_source()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CemsimError(
            f"cannot read the evaluation text: {exc} (named texts: {', '.join(TEXT_NAMES)})", where=str(p)
        ) from exc
    return EvalText(text, f"user file {p.resolve()}")


def token_ids(
    tokenizer, text: EvalText, count: int, *, from_end: bool = False, bos: int | None = None
) -> list[int]:
    """The first (or last) ``count`` tokens of the text; an error when the text is shorter. ``bos``: a
    token put at position 0 (then ``count - 1`` text tokens follow), for models that need one (Gemma)."""
    ids = tokenizer(text.text, add_special_tokens=False)["input_ids"]
    if len(ids) < count:
        raise CemsimError(f"the evaluation text has {len(ids)} tokens, fewer than the {count} asked for")
    if bos is not None:
        return [bos, *(ids[len(ids) - count + 1 :] if from_end else ids[: count - 1])]
    return ids[-count:] if from_end else ids[:count]


def long_token_ids(
    tokenizer, text: EvalText, count: int, *, repeat: bool = False, bos: int | None = None
) -> tuple[list[int], int]:
    """The first ``count`` tokens, and how many tokens the text has. With ``repeat``, a text shorter than
    ``count`` is cycled (joined by a blank line); without it, a clear error that says how many it has.
    ``bos``: a token put at position 0, before ``count - 1`` text tokens (models that need one)."""
    if bos is not None:
        ids, n = long_token_ids(tokenizer, text, count - 1, repeat=repeat)
        return [bos, *ids], n
    ids = tokenizer(text.text, add_special_tokens=False)["input_ids"]
    n = len(ids)
    if n >= count:
        return ids[:count], n
    if not repeat:
        raise CemsimError(
            f"the evaluation text has {n:,} tokens, fewer than the {count:,} asked for; use a longer text "
            "(--text stdlib-docs or a file) or --repeat-text to cycle it",
            where="--tokens",
        )
    if n == 0:
        raise CemsimError("the evaluation text is empty", where="--text")
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    unit = ids + sep
    reps = -(-count // len(unit))
    return (unit * reps)[:count], n
