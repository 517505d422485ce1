"""Every VAST 4.2 tracking event, and the event type the pixel stores it as.

Sources (IAB Tech Lab, ``InteractiveAdvertisingBureau/vast``): ``vast_4.2.xsd`` —
``TrackingEvents_type`` enumerates the 24 ``<Tracking event="...">`` names; ``Impression``,
``Error`` and ``VideoClicks/ClickTracking`` are elements of their own; ``ViewableImpression``
holds ``Viewable``, ``NotViewable`` and ``ViewUndetermined``; ``TrackingEvents_Verification_type``
has ``verificationNotExecuted``. The VAST 4.1/4.2 specification adds ``interactiveStart``
(SIMID) and ``notUsed`` (an ad in a pod that was not played). A pixel naming anything else is
rejected (``unknown_type``) and kept in ``rejected_events``.
"""

from __future__ import annotations

__all__ = ["PIXEL_EVENTS", "REPEATABLE", "SCHEMA_TRACKING_EVENTS", "FUNNEL", "VIEWABILITY"]

# <Tracking event="..."> values of vast_4.2.xsd (TrackingEvents_type), in the schema's order.
SCHEMA_TRACKING_EVENTS: tuple[str, ...] = (
    "mute", "unmute", "pause", "resume", "rewind", "skip", "playerExpand", "playerCollapse",
    "loaded", "start", "firstQuartile", "midpoint", "thirdQuartile", "complete", "progress",
    "closeLinear", "creativeView", "acceptInvitation", "adExpand", "adCollapse", "minimize",
    "close", "overlayViewDuration", "otherAdInteraction",
)

# VAST event name (as the pixel's `e=`) -> our event type (snake_case, events.py).
PIXEL_EVENTS: dict[str, str] = {
    # elements of their own
    "impression": "impression",
    "error": "error",
    "click": "click",  # VideoClicks/ClickTracking
    "viewable": "viewable_impression",  # ViewableImpression/Viewable
    "notViewable": "not_viewable",  # ViewableImpression/NotViewable
    "viewUndetermined": "view_undetermined",  # ViewableImpression/ViewUndetermined
    # TrackingEvents_type
    "mute": "mute",
    "unmute": "unmute",
    "pause": "pause",
    "resume": "resume",
    "rewind": "rewind",
    "skip": "skip",
    "playerExpand": "player_expand",
    "playerCollapse": "player_collapse",
    "loaded": "loaded",
    "start": "start",
    "firstQuartile": "first_quartile",
    "midpoint": "midpoint",
    "thirdQuartile": "third_quartile",
    "complete": "complete",
    "progress": "progress",
    "closeLinear": "close_linear",
    "creativeView": "creative_view",
    "acceptInvitation": "accept_invitation",
    "adExpand": "ad_expand",
    "adCollapse": "ad_collapse",
    "minimize": "minimize",
    "close": "close",
    "overlayViewDuration": "overlay_view_duration",
    "otherAdInteraction": "other_ad_interaction",
    # specification text (4.1/4.2) and the Verification tracking of the schema
    "interactiveStart": "interactive_start",
    "notUsed": "not_used",
    "verificationNotExecuted": "verification_not_executed",
}

# Events a viewer can cause several times in one play: their pixel id takes the playhead too,
# so a second pause is kept and a retried one is a duplicate. (progress takes its offset.)
REPEATABLE = frozenset({
    "pause", "resume", "mute", "unmute", "rewind", "playerExpand", "playerCollapse",
    "adExpand", "adCollapse", "minimize", "otherAdInteraction", "overlayViewDuration",
})

# Where events sit in the campaign report: the delivery funnel, and MRC viewability.
FUNNEL = ("impression", "start", "first_quartile", "midpoint", "third_quartile", "complete")
VIEWABILITY = ("viewable_impression", "not_viewable", "view_undetermined")
