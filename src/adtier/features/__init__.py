"""Ad-engagement features for recommendation jobs: live counters (``live``, fed by the
flusher), batch features (``batch``), bulk export (``export``) and routes (``routes``).
The schema is versioned and documented in ``schema``."""

__all__: list[str] = []
