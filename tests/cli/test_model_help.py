"""The --model help of eval, tune and capture names what the loader accepts (its bundled models and
architectures), not only Llama checkpoints."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from cemsim.attention.model_loader import BUNDLED_MODELS, SUPPORTED_TYPES
from cemsim.cli import app
from cemsim.commands.model_help import MODEL_HELP


def test_help_names_every_bundled_model_and_architecture():
    for name in BUNDLED_MODELS:
        assert name in MODEL_HELP
    for mtype in SUPPORTED_TYPES:
        assert mtype in MODEL_HELP
    assert ".gguf" in MODEL_HELP and "folder" in MODEL_HELP


@pytest.mark.parametrize("command", ["eval", "tune", "capture"])
def test_commands_show_it(command):
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert res.exit_code == 0
    flat = re.sub(r"[\s│]+", " ", res.output)
    assert "gemma3-270m" in flat and "gemma3_text" in flat
    assert "Llama checkpoint folder" not in flat
