"""Flush blocks: duplicate marks filter rows, ad/content split by n_ad, deterministic tokens."""

from __future__ import annotations

import json
import re
import uuid

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adtier.ingest.buffer import BatchRecord, Entry
from adtier.ingest.flusher import FlushBlocks, _keep, build_blocks, token_for


def rows(*names: str) -> bytes:
    return b"".join(b'{"n":"%s"}\n' % n.encode() for n in names)


def record(batch_id: str = "b-1", *, events: int, valid: int, n_ad: int,
           sent_at_ms: int | None = 1_717_000_000_000) -> BatchRecord:
    return BatchRecord(batch_id=batch_id, key_id="k-1", source="batch",
                       received_at_ms=1_717_000_000_123, sent_at_ms=sent_at_ms,
                       body_sha256="ab" * 32, events=events, valid=valid, n_ad=n_ad)


def entry(entry_id: str, ads: list[str], contents: list[str], bitmap: bytes, *,
          rejected: bytes = b"", events: int | None = None, batch_id: str = "b-1",
          sent_at_ms: int | None = 1_717_000_000_000) -> Entry:
    valid = len(ads) + len(contents)
    rec = record(batch_id, events=valid if events is None else events, valid=valid,
                 n_ad=len(ads), sent_at_ms=sent_at_ms)
    return Entry(entry_id=entry_id, batch_id=batch_id, record=rec, ad_rows=rows(*ads),
                 content_rows=rows(*contents), rejected_rows=rejected, bitmap=bitmap)


# ---- _keep -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marks", "kept"),
    [(b"000", ["a", "b", "c"]), (b"010", ["a", "c"]), (b"100", ["b", "c"]), (b"001", ["a", "b"]),
     (b"111", []), (b"101", ["b"])],
)
def test_keep_filters_lines_by_mark(marks: bytes, kept: list[str]) -> None:
    assert _keep(rows("a", "b", "c"), marks) == (rows(*kept), len(kept))


def test_keep_without_marks_keeps_nothing() -> None:
    assert _keep(b"", b"") == (b"", 0)
    assert _keep(rows("a"), b"") == (b"", 0)


def test_keep_all_new_returns_the_rows_unchanged() -> None:
    block = rows("a", "b")
    kept, n = _keep(block, b"00")
    assert kept is block and n == 2


@given(st.lists(st.tuples(st.text(alphabet=st.characters(codec="utf-8")), st.booleans())))
def test_keep_matches_a_line_by_line_filter(lines: list[tuple[str, bool]]) -> None:
    block = b"".join(msgspec.json.encode({"v": text}) + b"\n" for text, _ in lines)
    marks = bytes(b"1"[0] if dup else b"0"[0] for _, dup in lines)
    kept, n = _keep(block, marks)
    expected = [msgspec.json.encode({"v": text}) + b"\n" for text, dup in lines if not dup]
    assert kept == b"".join(expected)
    assert n == len(expected)


# ---- build_blocks ----------------------------------------------------------------------------


def test_build_blocks_splits_marks_at_n_ad() -> None:
    # marks: ad a1 a2 a3 = 0 1 0, content c1 c2 = 1 0
    e = entry("1-0", ["a1", "a2", "a3"], ["c1", "c2"], b"01010")
    blocks = build_blocks([e])
    assert isinstance(blocks, FlushBlocks)
    assert blocks.ad == rows("a1", "a3") and blocks.ad_rows == 2
    assert blocks.content == rows("c2") and blocks.content_rows == 1


def test_build_blocks_concatenates_entries_in_order() -> None:
    entries = [
        entry("1-0", ["a1"], ["c1", "c2"], b"000", rejected=b'{"r":1}\n', events=4, batch_id="b-1"),
        entry("1-1", [], ["c3"], b"1", batch_id="b-2", sent_at_ms=None),
        entry("2-0", ["a2", "a3"], [], b"10", rejected=b'{"r":2}\n', events=3, batch_id="b-3"),
    ]
    blocks = build_blocks(entries)
    assert blocks.ad == rows("a1", "a3") and blocks.ad_rows == 2
    assert blocks.content == rows("c1", "c2") and blocks.content_rows == 2
    assert blocks.rejected == b'{"r":1}\n{"r":2}\n'

    batches = [json.loads(line) for line in blocks.batches.splitlines()]
    assert [b["batch_id"] for b in batches] == ["b-1", "b-2", "b-3"]
    assert [(b["events"], b["accepted"], b["duplicates"], b["rejected"]) for b in batches] == [
        (4, 3, 0, 1), (1, 0, 1, 0), (3, 1, 1, 1)]
    assert batches[0]["sent_at"] == 1_717_000_000.0 and batches[1]["sent_at"] is None
    assert batches[0]["received_at"] == 1_717_000_000.123
    assert (batches[0]["key_id"], batches[0]["source"], batches[0]["body_sha256"]) == (
        "k-1", "batch", "ab" * 32)


def test_build_blocks_of_nothing() -> None:
    blocks = build_blocks([])
    assert (blocks.ad, blocks.content, blocks.rejected, blocks.batches) == (b"", b"", b"", b"")
    assert (blocks.ad_rows, blocks.content_rows) == (0, 0)


@given(st.lists(st.tuples(st.lists(st.booleans(), max_size=6), st.lists(st.booleans(), max_size=6)),
                max_size=5))
def test_build_blocks_keeps_exactly_the_unmarked_rows(spec) -> None:
    entries, want_ad, want_content = [], [], []
    for i, (ad_dups, content_dups) in enumerate(spec):
        ads = [f"a{i}.{j}" for j in range(len(ad_dups))]
        contents = [f"c{i}.{j}" for j in range(len(content_dups))]
        bitmap = bytes(49 if d else 48 for d in ad_dups + content_dups)
        entries.append(entry(f"{i}-0", ads, contents, bitmap))
        want_ad += [n for n, d in zip(ads, ad_dups) if not d]
        want_content += [n for n, d in zip(contents, content_dups) if not d]
    blocks = build_blocks(entries)
    assert blocks.ad == rows(*want_ad) and blocks.ad_rows == len(want_ad)
    assert blocks.content == rows(*want_content) and blocks.content_rows == len(want_content)
    assert len(blocks.batches.splitlines()) == len(entries)


# ---- token_for -------------------------------------------------------------------------------


def test_token_is_deterministic_and_depends_only_on_entry_ids() -> None:
    a = [entry("1-0", ["a"], [], b"0"), entry("1-1", [], ["c"], b"0")]
    same_ids_other_rows = [entry("1-0", ["x", "y"], [], b"01"), entry("1-1", [], [], b"")]
    token = token_for(a)
    assert re.fullmatch(r"[0-9a-f]{40}", token)
    assert token_for(a) == token
    assert token_for(same_ids_other_rows) == token


@pytest.mark.parametrize(
    "other_ids",
    [["1-0"], ["1-1", "1-0"], ["1-0", "1-2"], ["1-0", "1-1", "1-2"], ["1-01"]],
)
def test_token_changes_with_the_entry_ids(other_ids: list[str]) -> None:
    base = [entry("1-0", [], [], b""), entry("1-1", [], [], b"")]
    other = [entry(i, [], [], b"") for i in other_ids]
    assert token_for(other) != token_for(base)


@given(st.lists(st.from_regex(r"[0-9]{1,13}-[0-9]{1,3}", fullmatch=True), max_size=8, unique=True),
       st.lists(st.from_regex(r"[0-9]{1,13}-[0-9]{1,3}", fullmatch=True), max_size=8, unique=True))
def test_token_equal_iff_id_lists_equal(ids_a: list[str], ids_b: list[str]) -> None:
    ta = token_for([entry(i, [], [], b"") for i in ids_a])
    tb = token_for([entry(i, [], [], b"") for i in ids_b])
    assert (ta == tb) == (ids_a == ids_b)


def test_blocks_name_the_batches_with_ad_rows_and_the_earliest_receipt() -> None:
    ad_only = entry("1-0", ["a"], [], b"0", batch_id="b-ad")
    content_only = entry("1-1", [], ["c"], b"0", batch_id="b-content")
    all_duplicates = entry("1-2", ["d"], [], b"1", batch_id="b-dup")
    again = entry("1-3", ["e"], [], b"0", batch_id="b-ad")
    content_only.record.received_at_ms -= 5_000
    blocks = build_blocks([ad_only, content_only, all_duplicates, again])
    # the flusher's erasure check reads these (ingest/erased_events.copy_flushed)
    assert blocks.ad_batch_ids == ["b-ad"]
    assert blocks.received_from_ms == 1_717_000_000_123 - 5_000


def test_tokens_of_two_partitions_differ_for_the_same_entry_ids():
    # Entry ids are per stream: two partitions appended in the same millisecond both have
    # "...-0"; one token for both would make ClickHouse drop the second insert as a repeat.
    from adtier.ingest.flusher import token_for_ids, token_scope
    from adtier.ingest.partitions import LEGACY, BufferLayout

    ids = ["1796639349732-0", "1796639349733-0"]
    layout = BufferLayout(3)
    scoped = {token_for_ids(ids, token_scope(p, layout)) for p in layout.partitions}
    assert len(scoped) == 3
    # one partition on one server keeps the tokens it always had (plans in flight at upgrade)
    assert token_for_ids(ids, token_scope(LEGACY.partitions[0], LEGACY)) == token_for_ids(ids)


def test_with_ordinals_over_many_slices_matches_one_pass():
    """A block larger than one GIL-bounded slice gets the same bytes as row by row."""
    from adtier.ingest.flusher import with_ordinals
    from adtier.ingest.lines import SLICE_BYTES, line_slices

    class Assigned:
        def take(self, ids, token):
            return {pid: n + 1 for n, pid in enumerate(dict.fromkeys(ids))}

    rows = [b'{"profile_id":"p%d","pad":"%s"}\n' % (i % 37, b"x" * (i % 300))
            for i in range(30_000)]
    block = b"".join(rows)
    assert len(block) > 2 * SLICE_BYTES
    slices = list(line_slices(block))
    assert len(slices) > 2 and b"".join(slices) == block
    assert all(bytes(s).endswith(b"\n") for s in slices)
    ords = Assigned().take([f"p{i % 37}" for i in range(30_000)], "")
    expected = b"".join(r[:-2] + b',"profile_ord":%d}\n' % ords[f"p{i % 37}"]
                        for i, r in enumerate(rows))
    assert with_ordinals(block, Assigned(), "t") == expected


class _Assigned:
    def take(self, ids, token):
        return {pid: 7 ** (n % 12) for n, pid in enumerate(dict.fromkeys(ids))}


def _ad_rows(profiles: list[str], placeholder: list[bool]) -> bytes:
    """Ad rows as normalise writes them (with the placeholder) or as it wrote them before."""
    from tests.helpers import ad_event
    from adtier.events import DECODERS
    from adtier.ingest.normalise import TimePolicy, prepare_events

    events = [msgspec.json.encode(ad_event("impression", profile_id=p, ts=1_717_000_000_000,
                                           event_id=str(uuid.UUID(int=i + 1))))
              for i, p in enumerate(profiles)]
    out = prepare_events(events, DECODERS.json_event, TimePolicy(120_000, 300_000, 10**12),
                         1_717_000_000_100, None, "batch", "b-1", "k-1", 16_384)
    assert out.rejections == []
    from adtier.ingest.normalise import ORD_PLACEHOLDER

    cut = len(ORD_PLACEHOLDER) + 2
    return b"".join(row if keep else row[:-cut] + b"}\n"
                    for row, keep in zip(out.ad_rows, placeholder))


@pytest.mark.parametrize("kind", ["placeholders", "none", "mixed"])
@pytest.mark.parametrize("as_bytearray", [False, True])
def test_with_ordinals_gives_each_row_its_profiles_ordinal_once(kind, as_bytearray):
    """Rows with the placeholder are filled in place, rows without get the field added, and a
    block that mixes both (buffered across an upgrade) names the field once per row."""
    from adtier.ingest.flusher import with_ordinals

    profiles = [f"pf-{i % 13}" for i in range(40)]
    marks = {"placeholders": [True] * 40, "none": [False] * 40,
             "mixed": [i % 3 == 0 for i in range(40)]}[kind]
    block = _ad_rows(profiles, marks)
    ords = _Assigned().take(profiles, "")
    if as_bytearray:
        block = bytearray(block)
    out = with_ordinals(block, _Assigned(), "t")
    lines = bytes(out).splitlines()
    assert len(lines) == 40
    for line, pid in zip(lines, profiles):
        assert line.count(b'"profile_ord"') == 1
        parsed = json.loads(line)
        assert parsed["profile_id"] == pid and parsed["profile_ord"] == ords[pid]
    # a redo (the same block, filled in place or not) gives the same bytes
    assert bytes(with_ordinals(block, _Assigned(), "t")) == bytes(out)


def test_a_flush_blocks_ad_rows_get_their_ordinals_in_place():
    """build_blocks joins the entries' ad rows (each with normalise's placeholder) into a
    bytearray; with_ordinals fills that block itself (no second copy of it) and every row
    parses with its profile's ordinal, once."""
    from adtier.ingest.flusher import with_ordinals

    profiles = [f"pf-{i % 5}" for i in range(12)]
    ad = _ad_rows(profiles, [True] * 12)
    e = Entry(entry_id="1-0", batch_id="b-1", record=record(events=12, valid=12, n_ad=12),
              ad_rows=ad, content_rows=b"", rejected_rows=b"", bitmap=b"0" * 12)
    blocks = build_blocks([e])
    out = with_ordinals(blocks.ad, _Assigned(), "t")
    assert out is blocks.ad
    ords = _Assigned().take(profiles, "")
    for line, pid in zip(bytes(out).splitlines(), profiles):
        assert line.count(b'"profile_ord"') == 1
        assert json.loads(line)["profile_ord"] == ords[pid]


def test_a_short_first_row_takes_the_path_without_placeholder():
    """The in-place fill never reads before the block's start (a first row shorter than the
    placeholder has none): the rows still get their ordinals, each once."""
    from adtier.ingest.flusher import with_ordinals

    block = b'{"profile_id":"a"}\n' + _ad_rows(["pf-1"], [True])
    out = bytes(with_ordinals(block, _Assigned(), "t")).splitlines()
    assert [json.loads(line)["profile_ord"] for line in out] == [1, 7]
    assert all(line.count(b'"profile_ord"') == 1 for line in out)


@pytest.mark.parametrize("kind", ["placeholders", "mixed"])
def test_the_fill_in_passes_matches_one_pass(monkeypatch, kind):
    """fill_ordinals finds the rows' ends and fills them in bounded passes (a scan slice of a
    few rows, a pass of a few rows here, so every boundary falls mid-row and mid-block): the
    bytes are those of one pass; a row without the placeholder in a later pass still leaves
    the whole block unchanged (the path without placeholders takes it)."""
    from adtier.ingest import flusher
    from adtier.ingest.flusher import with_ordinals

    profiles = [f"pf-{i % 11}" for i in range(60)]
    marks = [True] * 60 if kind == "placeholders" else [i != 47 for i in range(60)]
    block = _ad_rows(profiles, marks)
    one_pass = bytes(with_ordinals(bytearray(block), _Assigned(), "t"))
    monkeypatch.setattr(flusher, "_SCAN_BYTES", 333)
    monkeypatch.setattr(flusher, "_ROWS_PER_PASS", 7)
    assert bytes(with_ordinals(bytearray(block), _Assigned(), "t")) == one_pass
    lines = one_pass.splitlines()
    assert len(lines) == 60 and all(line.count(b'"profile_ord"') == 1 for line in lines)
