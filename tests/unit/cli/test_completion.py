"""`fulfillment completion bash|zsh`: scripts generated from the parser, tried in the shells."""

from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest

from cli.completion import commands, script
from cli.main import build_parser, main

BASH = shutil.which("bash")
ZSH = shutil.which("zsh")


def subcommand_names(parser: argparse.ArgumentParser) -> set[str]:
    names: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                names.add(name)
                names |= subcommand_names(child)
    return names


def printed(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def test_the_bash_script_names_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    text = printed("bash", capsys)
    names = subcommand_names(build_parser())
    assert {"worker", "listener", "api", "migrate", "completion", "flush", "redrive"} <= names
    for name in names:
        assert f"/{name}'" in text, name
    assert "complete -F _fulfillment fulfillment" in text


def test_every_level_lists_its_options() -> None:
    levels = {level.path: level for level in commands(build_parser())}
    assert "--version" in levels[""].options
    assert "--status" in levels["/migrate"].options
    assert levels["/cache/flush"].values["--scope"] == ("services", "orders", "all")
    assert levels["/completion"].arguments == ["bash", "zsh"]


def test_an_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["completion", "fish"])
    assert exited.value.code == 2
    with pytest.raises(ValueError, match="fish"):
        script("fish", build_parser())


def bash_complete(line: str) -> list[str]:
    """What the generated bash completion offers for `line` (the last word being completed)."""
    assert BASH is not None
    words = line.split(" ")
    program = "\n".join(
        [
            script("bash", build_parser()),
            "COMP_WORDS=(" + " ".join(f"'{word}'" for word in words) + ")",
            f"COMP_CWORD={len(words) - 1}",
            "_fulfillment",
            'printf "%s\\n" "${COMPREPLY[@]}"',
        ]
    )
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [word for word in done.stdout.splitlines() if word]


@pytest.mark.skipif(BASH is None, reason="no bash here")
def test_bash_completes_subcommands_options_and_choices() -> None:
    top = bash_complete("fulfillment ")
    assert subcommand_names(build_parser()) - {"flush", "redrive", "order"} <= set(top)
    assert bash_complete("fulfillment mi") == ["migrate"]
    assert bash_complete("fulfillment migrate --st") == ["--status"]
    assert bash_complete("fulfillment cache ") == ["flush", "-h", "--help"]
    assert bash_complete("fulfillment cache flush --scope o") == ["orders"]
    assert bash_complete("fulfillment failed --error-code PRO") == ["PRODUCT_NOT_MAPPED"]
    assert bash_complete("fulfillment completion ") == ["bash", "zsh", "-h", "--help"]
    # A free-text value: nothing to offer, not the options.
    assert bash_complete("fulfillment retry 801 --reason ") == []


def zsh_complete(line: str) -> list[str]:
    """What the generated zsh completion would add for `line`, with compadd and _describe
    stubbed to print their candidates (outside a completion widget `words` is a plain array)."""
    assert ZSH is not None
    words = line.split(" ")
    program = "\n".join(
        [
            "compdef() { : }",
            'compadd() { [[ $1 == -a ]] && print -l -- "${(@P)2}" }',
            '_describe() { print -l -- "${(@)${(@P)4}%%:*}" }',
            "_message() { : }",
            script("zsh", build_parser()),
            "words=(" + " ".join(f"'{word}'" for word in words) + ")",
            f"CURRENT={len(words)}",
            "_fulfillment",
        ]
    )
    done = subprocess.run(
        [ZSH, "-f", "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    return [word for word in done.stdout.splitlines() if word]


@pytest.mark.skipif(ZSH is None, reason="no zsh here")
def test_zsh_offers_the_same_words() -> None:
    top = zsh_complete("fulfillment ")
    assert {"worker", "migrate", "completion", "--version"} <= set(top)
    assert zsh_complete("fulfillment cache ") == ["flush", "-h", "--help"]
    assert zsh_complete("fulfillment cache flush --scope ") == ["services", "orders", "all"]
    assert zsh_complete("fulfillment retry 801 --reason ") == []
