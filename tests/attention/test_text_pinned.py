"""The pinned evaluation text (cemsim/data/pydoc-topics-3.11.7.txt) that `cemsim demo` captures from: Python
3.11.7's Language Reference topics, so a demo capture has the same tokens on any Python."""

from __future__ import annotations

import sys

import pytest

from cemsim.attention.text import PINNED_TOPICS, TEXT_NAMES, load_text, pydoc_topics
from cemsim.commands.demo_cmd import CAPTURE_TEXT

# sha256 of the topics joined in sorted key order on CPython 3.11.7 (the traces of docs/projection.md's CPU runs)
SHA_3_11_7 = "71f2ff5d99bdc1f9c48c5c2353ad138201c5ca1c377e0226857ef8fa89b8bcee"


def test_pinned_text_is_python_3_11_7s_topics() -> None:
    text = load_text(PINNED_TOPICS)
    assert text.sha256 == SHA_3_11_7
    assert "3.11.7" in text.provenance and "PSF License" in text.provenance


@pytest.mark.skipif(
    sys.version_info[:3] != (3, 11, 7), reason="the installed topics are Python 3.11.7's only there"
)
def test_pinned_text_is_what_python_3_11_7_installs() -> None:
    assert load_text(PINNED_TOPICS).text == pydoc_topics().text


def test_demo_captures_from_the_pinned_text() -> None:
    assert CAPTURE_TEXT == PINNED_TOPICS and CAPTURE_TEXT in TEXT_NAMES
