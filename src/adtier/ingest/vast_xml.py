"""Our tracking URLs as VAST 4.2 XML: ``GET /v1/vast/tracking`` (admin).

Without ``document`` the answer is the elements to paste into an ``<InLine>`` ad (an XML
fragment: ``<Error>``, ``<Impression>``, ``<ViewableImpression>``, ``<TrackingEvents>`` and
``<ClickTracking>``); with ``document=true`` a whole minimal VAST 4.2 document holding them, its
elements in the order and with the required attributes of ``vast_4.2.xsd`` (IAB Tech Lab,
``InteractiveAdvertisingBureau/vast``): ``Inline_type`` extends ``AdDefinitionBase_type``
(AdSystem, Error*, Impression+, ViewableImpression?) with AdServingId, AdTitle, Creatives;
a ``Creative`` holds ``UniversalAdId`` (``idRegistry`` required) and ``Linear``, whose sequence is
TrackingEvents?, Duration, MediaFiles (``MediaFile`` with delivery, type, width, height),
VideoClicks?.

Every URL is the pixel (``/v1/px``) with the IAB macros in brackets for the player to fill.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from typing import Annotated
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get
from litestar.params import FromQuery, QueryParameter

from adtier.errors import ApiError
from adtier.ingest.vast_events import PIXEL_EVENTS, SCHEMA_TRACKING_EVENTS
from adtier.state import authorize

__all__ = ["VastController", "tracking_urls", "tracking_elements", "vast_document",
           "VAST_NAMESPACE"]

VAST_NAMESPACE = "http://www.iab.com/VAST"

# Pixel parameters every URL carries: the IAB macros the player fills, and our SDK's
# bracketed player macros ([ACCOUNT_ID] ...), which a player without our SDK leaves unfilled.
_MACROS = {
    "asid": "[ADSERVINGID]", "acc": "[ACCOUNT_ID]", "pf": "[PROFILE_ID]",
    "ses": "[SESSION_ID]", "pod": "[POD_ID]", "pos": "[POD_POSITION]",
    "bp": "[BREAKPOSITION]", "dur": "[AD_DURATION_MS]", "ph": "[ADPLAYHEAD]",
    "mph": "[MEDIAPLAYHEAD]", "c": "[CONTENTID]", "uaid": "[UNIVERSALADID]",
    "dev": "[DEVICE]", "cc": "[COUNTRY]", "ss": "[SERVERSIDE]", "ts": "[TIMESTAMP]",
    "cb": "[CACHEBUSTING]",
}
_DURATION = re.compile(r"^\d{2}:[0-5]\d:[0-5]\d(\.\d{3})?$")
# What XML 1.0 can hold at all (its Char production): the other control characters cannot be
# written even as references, so a value holding one would make a document no player parses.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_OFFSET = re.compile(r"^(\d{2}:[0-5]\d:[0-5]\d(\.\d\d\d)?|1?\d?\d(\.?\d)*%)$")


def tracking_urls(base: str, campaign_id: str, creative_id: str, ingest_key: str,
                  events: list[str] | None = None, offset: str = "") -> dict[str, str]:
    """VAST event name -> pixel URL (``base`` is the server's root URL)."""
    urls = {}
    for vast in events or list(PIXEL_EVENTS):
        query = {"k": ingest_key, "e": vast, "cmp": campaign_id, "cr": creative_id, **_MACROS}
        if vast == "error":
            query["err"] = "[ERRORCODE]"
        if vast == "verificationNotExecuted":
            query["rsn"] = "[REASON]"
        if vast == "progress":
            query["off"] = offset
        # brackets stay readable for the player's macros; "%" is always escaped, or an id
        # holding one ("cmp-%41") would reach the pixel decoded into another id ("cmp-A")
        urls[vast] = f"{base}/v1/px?" + urlencode(query, safe="[]:")
    return urls


def _url(parent: ET.Element, tag: str, url: str, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    child.text = url
    return child


def tracking_elements(base: str, campaign_id: str, creative_id: str, ingest_key: str,
                      progress: list[str]) -> dict[str, ET.Element]:
    """The paste-ready elements, by name (in the order they sit in an InLine ad)."""
    url = tracking_urls(base, campaign_id, creative_id, ingest_key)
    error = ET.Element("Error")
    error.text = url["error"]
    impression = ET.Element("Impression", {"id": "adtier"})
    impression.text = url["impression"]
    viewable = ET.Element("ViewableImpression", {"id": "adtier"})
    for tag, vast in (("Viewable", "viewable"), ("NotViewable", "notViewable"),
                      ("ViewUndetermined", "viewUndetermined")):
        _url(viewable, tag, url[vast])
    events = ET.Element("TrackingEvents")
    for vast in SCHEMA_TRACKING_EVENTS:
        if vast != "progress":
            _url(events, "Tracking", url[vast], event=vast)
    for offset in progress:
        at = tracking_urls(base, campaign_id, creative_id, ingest_key, ["progress"], offset)
        _url(events, "Tracking", at["progress"], event="progress", offset=offset)
    click = ET.Element("ClickTracking", {"id": "adtier"})
    click.text = url["click"]
    return {"Error": error, "Impression": impression, "ViewableImpression": viewable,
            "TrackingEvents": events, "ClickTracking": click}


def vast_document(elements: dict[str, ET.Element], campaign_id: str, creative_id: str,
                  media_url: str, duration: str) -> ET.Element:
    """A minimal VAST 4.2 InLine document around ``elements`` (order: vast_4.2.xsd)."""
    root = ET.Element("VAST", {"version": "4.2", "xmlns": VAST_NAMESPACE})
    inline = ET.SubElement(ET.SubElement(root, "Ad", {"id": campaign_id}), "InLine")
    ET.SubElement(inline, "AdSystem").text = "adtier"
    inline.append(elements["Error"])
    inline.append(elements["Impression"])
    inline.append(elements["ViewableImpression"])
    # "{AD SERVER NAME}-{UUID}" (the macro list's format for [ADSERVINGID]); the ad server
    # writes a new one into each response it serves
    ET.SubElement(inline, "AdServingId").text = f"adtier-{uuid.uuid4()}"
    ET.SubElement(inline, "AdTitle").text = f"{campaign_id} {creative_id}"
    creative = ET.SubElement(ET.SubElement(inline, "Creatives"), "Creative", {"id": creative_id})
    ET.SubElement(creative, "UniversalAdId", {"idRegistry": "unknown"}).text = "unknown"
    linear = ET.SubElement(creative, "Linear")
    linear.append(elements["TrackingEvents"])
    ET.SubElement(linear, "Duration").text = duration
    files = ET.SubElement(linear, "MediaFiles")
    _url(files, "MediaFile", media_url, delivery="progressive", type="video/mp4",
         width="1920", height="1080")
    ET.SubElement(linear, "VideoClicks").append(elements["ClickTracking"])
    return root


def _xml(element: ET.Element) -> str:
    ET.indent(element)
    return ET.tostring(element, encoding="unicode")


class VastController(Controller):
    path = "/v1/vast"
    tags = ["ingest"]

    @get("/tracking", summary="Our tracking elements for a VAST 4.2 InLine ad")
    async def tracking(
        self, request: Request, campaign_id: FromQuery[str], creative_id: FromQuery[str],
        ingest_key: FromQuery[str] = "[INGEST_KEY]", document: FromQuery[bool] = False,
        media_url: FromQuery[str] = "https://example.com/ad.mp4",
        duration: Annotated[str, QueryParameter(description="HH:MM:SS(.mmm)")] = "00:00:30",
        progress: Annotated[str, QueryParameter(description="offsets, comma-separated")]
        = "00:00:05",
    ) -> Response[str]:
        """The ``<Error>``, ``<Impression>``, ``<ViewableImpression>``, ``<TrackingEvents>`` (every
        event of vast_4.2.xsd, progress at each offset) and ``<ClickTracking>`` elements with our
        pixel URLs and the IAB macros, to paste into an ``<InLine>`` ad; ``document=true`` gives a
        whole minimal VAST 4.2 document around them."""
        await authorize(request, "admin")
        for name, value in (("campaign_id", campaign_id), ("creative_id", creative_id),
                            ("ingest_key", ingest_key), ("media_url", media_url)):
            if _NOT_XML.search(value):
                raise ApiError(400, "invalid_parameter",
                               f"`{name}` holds a character XML cannot carry")
        offsets = [o.strip() for o in progress.split(",") if o.strip()]
        for value, pattern, name in [(duration, _DURATION, "duration")] + [
                (o, _OFFSET, "progress") for o in offsets]:
            if not pattern.match(value):
                raise ApiError(400, "invalid_parameter",
                               f"`{name}` {value!r} is not HH:MM:SS(.mmm)"
                               + (" or n%" if name == "progress" else ""))
        base = str(request.base_url).rstrip("/")
        elements = tracking_elements(base, campaign_id, creative_id, ingest_key, offsets)
        if document:
            body = ('<?xml version="1.0" encoding="UTF-8"?>\n' + _xml(
                vast_document(elements, campaign_id, creative_id, media_url, duration)))
        else:
            body = "\n".join(_xml(e) for e in elements.values()) + "\n"
        return Response(body, media_type="application/xml")
