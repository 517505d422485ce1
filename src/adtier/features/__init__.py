"""Ad-engagement features for recommendation jobs: live counters (``live``, fed by the
flusher), batch features (``batch``), the look-up's Valkey mirror (``mirror``), bulk export
(``export``) with race-free watermarks (``watermark``), scheduled computations
(``scheduler``), audit records (``auditing``) and routes (``routes``). The schema is versioned
and documented in ``schema``."""

__all__: list[str] = []
