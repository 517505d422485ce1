"""Every IAB VAST 4.x macro the pixel reads, in each format the IAB allows, raw and
percent-encoded, from the IAB's own examples (tests/iab/vast4_macros.toml); the macros it does
not read are ignored, never a rejection."""

from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import parse_qsl

import msgspec
import pytest

from adtier.events import DECODERS
from adtier.ingest import vast_macros as M
from adtier.ingest.normalise import to_ms
from adtier.ingest.pixel import pixel_event

IAB = tomllib.loads((Path(__file__).parents[1] / "iab" / "vast4_macros.toml").read_text())
RECEIVED = 1_717_000_000_123
BASE = "e={e}&acc=acc-1&pf=pf-1&asid=as-1&cmp=cmp-1&cr=cr-1"


def _cases() -> list:
    cases = []
    for macro in IAB["macro"]:
        for example in macro["examples"]:
            for form in ("raw", "encoded"):
                cases.append(pytest.param(macro, example, example[form],
                                          id=f"{macro['name']}-{form}-{example[form]}"))
    return cases


def fire(query: str) -> dict[str, object]:
    """The pixel as the server reads a URL's query string (decoded once)."""
    return pixel_event(dict(parse_qsl(query, keep_blank_values=True)), RECEIVED)


@pytest.mark.parametrize(("macro", "example", "in_url"), _cases())
def test_iab_macro_example_in_the_url(macro: dict, example: dict, in_url: str) -> None:
    query = BASE.format(e=macro.get("event", "impression")) + f"&{macro['param']}={in_url}"
    if macro.get("event") == "error" and macro["param"] != "err":
        query += "&err=900"
    event = fire(query)
    decoded = DECODERS.json_event.decode(msgspec.json.encode(event))
    if "field" not in macro:  # read, not stored (CACHEBUSTING)
        assert decoded.ts == RECEIVED
        return
    field, expected = macro["field"], example["value"]
    if field == "ts":
        assert to_ms(decoded.ts) == expected
    elif expected == "":
        assert field not in event and getattr(decoded, field) is None
    else:
        assert getattr(decoded, field) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [pytest.param(m["name"], v, id=f"{m['name']}-{v}") for m in IAB["ignored"]
     for v in m["examples"]])
def test_macros_the_pixel_does_not_read_are_ignored(name: str, value: str) -> None:
    event = fire(BASE.format(e="start") + f"&{name.lower()}={value}&x_{name}={value}")
    assert DECODERS.json_event.decode(msgspec.json.encode(event)).__struct_config__.tag == "start"


def test_the_fixture_covers_every_macro_the_pixel_reads() -> None:
    read = {m["param"] for m in IAB["macro"]}
    assert {"ts", "cb", "ph", "mph", "cph", "bp", "uaid", "asid", "c", "ss", "err", "rsn"} <= read


# ---- readers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ms"), [("00:00:05.250", 5_250), ("01:02:03.004", 3_723_004),
                                           ("00:00:00", 0), ("00:00:15", 15_000),
                                           ("00:00:00.001", 1), ("10:00:00.000", 36_000_000),
                                           ("00:00:01.5", 1_500), ("1500", 1_500), ("0", 0),
                                           ("00%3A00%3A11.355", 11_355)])
def test_timecode(value: str, ms: int) -> None:
    assert M.timecode_ms(value) == ms


@pytest.mark.parametrize("value", ["1:2", "a:b:c", "12.5", "00:00:xx", "1:2:3:4", "00:00:inf",
                                   "00:60:00", "-5", "999:59:59.999", "99999999999"])
def test_timecode_outside_the_format(value: str) -> None:
    with pytest.raises(M.MacroError):
        M.timecode_ms(value)


@pytest.mark.parametrize("value", ["2016-01-17", "2016-01-17T25:00:00Z", "2016-01-17T08:15:07+25",
                                   "now", "2016-02-30T00:00:00Z", "T08:15:07"])
def test_timestamp_outside_the_format(value: str) -> None:
    with pytest.raises(M.MacroError):
        M.timestamp_ms(value)


def test_timestamp_offsets_are_the_same_instant() -> None:
    instants = {M.timestamp_ms(v) for v in (
        "2016-01-17T8:15:07.127-05", "2016-01-17T08:15:07.127-05:00", "2016-01-17T08:15:07.127-0500",
        "2016-01-17T13:15:07.127Z", "2016-01-17T18:45:07.127+05:30", "2016-01-17T13:15:07.127")}
    assert instants == {1_453_036_507_127}


@pytest.mark.parametrize(("value", "unfilled"),
                         [("[ERRORCODE]", True), ("%5BERRORCODE%5D", True), ("%5berrorcode%5d", True),
                          ("${AUCTION_ID}", True), ("__0__", False), ("__ADSERVINGID__", False),
                          ("{ADSERVINGID}", False), ("[a b]", False), ("900", False)])
def test_unfilled_follows_the_iab_bracket_syntax(value: str, unfilled: bool) -> None:
    assert M.unfilled(value) is unfilled
