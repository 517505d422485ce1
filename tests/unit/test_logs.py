"""Log lines: readable on a terminal, JSON otherwise, and never mixed into a progress bar."""

from __future__ import annotations

import io
import json

from tqdm import tqdm

from adtier.logs import BarSafeStderr
from adtier.settings import load_settings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_go_above_a_live_progress_bar():
    screen = Terminal()
    out = BarSafeStderr(screen)
    with tqdm(total=2, file=screen, desc="export", ncols=60) as bar:
        out.write('{"event": "a"}')  # print() writes the line, then its newline
        out.write("\n")
        bar.update(1)
        out.write('{"event": "b"}\n')
    # each record sits on a line of its own, the bar's text never inside it
    records = [line.strip("\r") for line in screen.getvalue().replace("\r", "\n").splitlines()]
    logged = [json.loads(line) for line in records if line.startswith("{")]
    assert [r["event"] for r in logged] == ["a", "b"]


def test_log_format_chooses_or_leaves_it_to_the_terminal():
    assert load_settings({}).log_as_json is None
    assert load_settings({"ADTIER_LOG_FORMAT": "json"}).log_as_json is True
    assert load_settings({"ADTIER_LOG_FORMAT": "console"}).log_as_json is False
    assert load_settings({"ADTIER_LOG_JSON": "false"}).log_as_json is False
