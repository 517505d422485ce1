"""The VAST 4.2 XML the helper writes, checked against rules written from vast_4.2.xsd
(IAB Tech Lab, github.com/InteractiveAdvertisingBureau/vast, file vast_4.2.xsd; copied by hand,
nothing fetched at run time)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, urlsplit

import pytest

from adtier.ingest.vast_events import PIXEL_EVENTS, SCHEMA_TRACKING_EVENTS
from adtier.ingest.vast_xml import VAST_NAMESPACE, tracking_elements, vast_document

NS = "{" + VAST_NAMESPACE + "}"

# element -> (its children in schema order as (name, minOccurs, maxOccurs or None = unbounded),
#             whether the order is fixed (xs:sequence) or free (xs:all), required attributes)
RULES: dict[str, tuple[list[tuple[str, int, int | None]], bool, set[str]]] = {
    # <xs:element name="VAST">: a choice of Ad* / Error*; @version required
    "VAST": ([("Ad", 0, None)], True, {"version"}),
    # Ad: a choice of InLine | Wrapper (exactly one)
    "Ad": ([("InLine", 1, 1)], True, set()),
    # Inline_type = AdDefinitionBase_type sequence + Inline_type sequence
    "InLine": ([("AdSystem", 1, 1), ("Error", 0, None), ("Extensions", 0, 1),
                ("Impression", 1, None), ("Pricing", 0, 1), ("ViewableImpression", 0, 1),
                ("AdServingId", 1, 1), ("AdTitle", 1, 1), ("AdVerifications", 0, 1),
                ("Advertiser", 0, 1), ("Category", 0, None), ("Creatives", 1, 1),
                ("Description", 0, 1), ("Expires", 0, 1), ("Survey", 0, 1)], True, set()),
    # ViewableImpression_type
    "ViewableImpression": ([("Viewable", 0, None), ("NotViewable", 0, None),
                            ("ViewUndetermined", 0, None)], True, set()),
    "Creatives": ([("Creative", 1, None)], True, set()),
    # Creative_Inline_type: xs:all
    "Creative": ([("CompanionAds", 0, 1), ("CreativeExtensions", 0, 1), ("Linear", 0, 1),
                  ("NonLinearAds", 0, 1), ("UniversalAdId", 1, None)], False, set()),
    "UniversalAdId": ([], True, {"idRegistry"}),
    # Linear_Inline_type = Linear_Base_type (Icons?, TrackingEvents?) + its own sequence
    "Linear": ([("Icons", 0, 1), ("TrackingEvents", 0, 1), ("AdParameters", 0, 1),
                ("Duration", 1, 1), ("MediaFiles", 1, 1), ("VideoClicks", 0, 1)], True, set()),
    "TrackingEvents": ([("Tracking", 0, None)], True, set()),
    "Tracking": ([], True, {"event"}),
    "MediaFiles": ([("ClosedCaptionFiles", 0, 1), ("MediaFile", 1, None), ("Mezzanine", 0, None),
                    ("InteractiveCreativeFile", 0, None)], True, set()),
    "MediaFile": ([], True, {"delivery", "type", "width", "height"}),
    # VideoClicks_Inline_type = VideoClicks_Base_type + ClickThrough?
    "VideoClicks": ([("ClickTracking", 0, None), ("CustomClick", 0, None),
                     ("ClickThrough", 0, 1)], True, set()),
}
LEAVES = {"AdSystem", "Error", "Impression", "Viewable", "NotViewable", "ViewUndetermined",
          "AdServingId", "AdTitle", "Duration", "ClickTracking"}
# TrackingEvents_type/Tracking/@offset and Linear/Duration (xs:time)
OFFSET = re.compile(r"^(\d{2}:[0-5]\d:[0-5]\d(\.\d\d\d)?|1?\d?\d(\.?\d)*%)$")
TIME = re.compile(r"^\d{2}:[0-5]\d:[0-5]\d(\.\d+)?$")


def check(element: ET.Element) -> None:
    """Raise AssertionError where ``element`` breaks a rule (recursively)."""
    name = element.tag.removeprefix(NS)
    assert element.tag == NS + name, f"{element.tag} is outside the VAST namespace"
    if name in LEAVES:
        assert len(element) == 0 and (element.text or "").strip(), f"{name} needs text"
        return
    assert name in RULES, f"no rule for {name}"
    children, ordered, required = RULES[name]
    assert required <= set(element.attrib), f"{name} lacks {required - set(element.attrib)}"
    names = [c.tag.removeprefix(NS) for c in element]
    allowed = [c for c, _, _ in children]
    assert set(names) <= set(allowed), f"{name} may not hold {set(names) - set(allowed)}"
    for child, low, high in children:
        n = names.count(child)
        assert n >= low and (high is None or n <= high), f"{name}/{child} occurs {n} times"
    if ordered:
        positions = [allowed.index(n) for n in names]
        assert positions == sorted(positions), f"{name} children out of order: {names}"
    if name == "Tracking":
        assert element.attrib["event"] in SCHEMA_TRACKING_EVENTS
        if element.attrib["event"] == "progress":
            assert OFFSET.match(element.attrib.get("offset", "")), "progress needs its offset"
        assert (element.text or "").strip()
    if name == "MediaFile":
        assert element.attrib["delivery"] in ("streaming", "progressive")
        assert element.attrib["width"].isdigit() and element.attrib["height"].isdigit()
    for child in element:
        check(child)
    if name == "Linear":
        duration = element.find(NS + "Duration")
        assert duration is not None and TIME.match(duration.text or "")


def document() -> ET.Element:
    elements = tracking_elements("http://ads.test", "cmp-1", "cr-1", "key-1",
                                 ["00:00:05", "50%"])
    text = ET.tostring(vast_document(elements, "cmp-1", "cr-1", "https://cdn.test/ad.mp4",
                                     "00:00:30"), encoding="unicode")
    return ET.fromstring(text)  # parsed back, as a player reads it


def test_the_document_follows_the_vast_4_2_schema() -> None:
    root = document()
    assert root.attrib["version"] == "4.2"
    check(root)


def test_every_schema_tracking_event_and_viewability_url_is_in_the_document() -> None:
    root = document()
    events = [t.attrib["event"] for t in root.iter(NS + "Tracking")]
    assert set(events) == set(SCHEMA_TRACKING_EVENTS)
    assert events.count("progress") == 2
    for tag in ("Impression", "Error", "Viewable", "NotViewable", "ViewUndetermined",
                "ClickTracking"):
        assert len(list(root.iter(NS + tag))) == 1, tag


def test_every_url_is_our_pixel_with_the_iab_macros() -> None:
    root = document()
    urls = [e.text for e in root.iter() if e.text and e.text.startswith("http://ads.test/v1/px")]
    assert len(urls) == len(SCHEMA_TRACKING_EVENTS) + 1 + 6  # progress twice, + 6 elements
    for url in urls:
        query = dict(parse_qsl(urlsplit(url).query))
        assert query["e"] in PIXEL_EVENTS
        assert (query["k"], query["cmp"], query["cr"]) == ("key-1", "cmp-1", "cr-1")
        assert query["asid"] == "[ADSERVINGID]" and query["ts"] == "[TIMESTAMP]"
        assert query["bp"] == "[BREAKPOSITION]" and query["ph"] == "[ADPLAYHEAD]"
        assert query["ss"] == "[SERVERSIDE]"
    error = next(root.iter(NS + "Error")).text
    assert "err=[ERRORCODE]" in error


@pytest.mark.parametrize("broken", ["order", "missing", "attribute", "event"])
def test_the_rules_catch_a_broken_document(broken: str) -> None:
    root = document()
    inline = root.find(f"{NS}Ad/{NS}InLine")
    if broken == "order":
        title = inline.find(NS + "AdTitle")
        inline.remove(title)
        inline.insert(0, title)
    elif broken == "missing":
        inline.remove(inline.find(NS + "AdServingId"))
    elif broken == "attribute":
        del next(root.iter(NS + "MediaFile")).attrib["delivery"]
    else:
        next(root.iter(NS + "Tracking")).attrib["event"] = "fullscreen"
    with pytest.raises(AssertionError):
        check(root)
