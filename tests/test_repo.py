"""The repository's promises: README commands, CI script, changelog, shipped files."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README must start with a code block of commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_demo_and_test_commands():
    demo, tests = readme_commands()[:2]
    assert "hf-vit-rollout demo" in demo and "pytest" in tests
    text = (ROOT / "README.md").read_text()
    assert text.index("```") < 600, "the commands come first"


def test_ci_runs_the_readme_test_command_verbatim():
    tests = readme_commands()[1]
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_changelog_follows_keep_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in text and "## [Unreleased]" in text


def test_demo_checkpoint_and_images_are_shipped():
    from hf_vit_rollout import demo_model_path
    from hf_vit_rollout.demo import example_images

    folder = demo_model_path()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (folder / name).is_file(), name
    assert (folder / "model.safetensors").stat().st_size < 8 * 2**20
    assert len(example_images()) >= 4
    assert any(p.stem.count("_") == 2 for p in example_images())  # a two-object example
