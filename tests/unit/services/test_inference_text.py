"""The service's incremental detokenization: deltas add up to the decoded text, text that may
begin a stop string is held back, a stop string ends the text before it; and a services
process that serves no generation never imports torch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest

from llmops_services.inference.engine import ChatTurn, NoChatTemplate
from llmops_services.inference.text import TextStream


class CharTokenizer:
    """One token per character (ids are code points); 0xFFFD stands for half a character."""

    context_length = 64

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in token_ids)

    def render_chat(self, messages: Sequence[ChatTurn]) -> str:
        raise NoChatTemplate("characters only")


def run(text: str, stop: Sequence[str]) -> tuple[list[str], str, bool]:
    stream = TextStream(CharTokenizer(), stop)
    deltas = []
    for char in text:
        deltas.append(stream.push(ord(char)))
        if stream.stopped:
            break
    deltas.append(stream.finish())
    return deltas, stream.text, stream.stopped


def test_without_stop_strings_every_token_comes_out_at_once() -> None:
    deltas, text, stopped = run("river", [])
    assert deltas == ["r", "i", "v", "e", "r", ""]
    assert (text, stopped) == ("river", False)


def test_a_stop_string_ends_the_text_before_it_and_its_start_is_held_back() -> None:
    deltas, text, stopped = run("the end. more", ["end."])
    assert "".join(deltas) == text == "the "
    assert stopped
    # "e" might begin "end.", so it waits for the next character; so does "end"
    assert deltas[:4] == ["t", "h", "", "e "]
    assert deltas[4:7] == ["", "", ""]


def test_held_back_text_that_is_no_stop_string_comes_out_later() -> None:
    deltas, text, stopped = run("an ending", ["end."])
    assert "".join(deltas) == text == "an ending"
    assert not stopped


def test_an_incomplete_character_waits_for_its_last_bytes() -> None:
    stream = TextStream(CharTokenizer(), [])
    assert stream.push(ord("a")) == "a"
    assert stream.push(0xFFFD) == ""
    assert stream.finish() == "\ufffd"


@pytest.mark.parametrize("stop", [["a"], ["ab", "b"]])
def test_the_earliest_stop_string_wins(stop: list[str]) -> None:
    _, text, stopped = run("xxabyy", stop)
    assert (text, stopped) == ("xx", True)


def test_the_services_import_no_torch_until_a_model_loads() -> None:
    code = (
        "import sys, llmops_services.app\n"
        "from llmops_services.inference.hf_engine import HFEngine\n"
        "from llmops_services.settings import Settings\n"
        "HFEngine(Settings())\n"
        "heavy = ('torch', 'transformers', 'peft', 'llmops_ml')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
