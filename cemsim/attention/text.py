"""The evaluation text: long English that ships with Python itself, so nothing is downloaded.

Default: the *Python Language Reference* topics that every CPython installs as ``pydoc_data.topics``
(the text behind ``help("assignment")``; Python Software Foundation, PSF License 2.0). All 79 topics joined
in sorted key order give about 465K characters, about 110K SmolLM2 tokens. Any UTF-8 file can replace it
(``--text FILE``). See cemsim/data/README.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cemsim.errors import CemsimError

DEFAULT_PROVENANCE = (
    "Python Language Reference topics (pydoc_data.topics, shipped with CPython; PSF License 2.0), "
    "topics joined in sorted key order"
)


@dataclass(frozen=True)
class EvalText:
    text: str
    provenance: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_text(path: str | Path | None = None) -> EvalText:
    if path is None:
        try:
            from pydoc_data.topics import topics
        except ImportError as exc:  # some distro Pythons strip pydoc_data
            raise CemsimError(
                "this Python has no pydoc_data module, cemsim's default evaluation text; pass --text FILE"
            ) from exc
        return EvalText("\n\n".join(topics[key] for key in sorted(topics)), DEFAULT_PROVENANCE)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CemsimError(f"cannot read the evaluation text: {exc}", where=str(p)) from exc
    return EvalText(text, f"user file {p.resolve()}")


def token_ids(tokenizer, text: EvalText, count: int, *, from_end: bool = False) -> list[int]:
    """The first (or last) ``count`` tokens of the text; an error when the text is shorter."""
    ids = tokenizer(text.text, add_special_tokens=False)["input_ids"]
    if len(ids) < count:
        raise CemsimError(f"the evaluation text has {len(ids)} tokens, fewer than the {count} asked for")
    return ids[-count:] if from_end else ids[:count]
