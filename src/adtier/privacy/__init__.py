"""The one home of what advertiser answers may reveal (docs/privacy.md): tenancy of catalog-keyed
inputs (``tenancy``), differentially private counts with seeded noise (``noise``), the
per-advertiser privacy budget (``budget``) and the release rules that combine them with the
k-threshold (``release``). ``measure`` and ``segments`` call it; it imports neither."""
