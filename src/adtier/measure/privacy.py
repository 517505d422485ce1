"""Privacy rules for everything measurement releases (docs/privacy.md).

- **Tenancy**: an advertiser key sees only campaigns whose ``advertiser_id`` is its own; any
  other campaign (or an unknown one) answers 404, never 403, so ids cannot be probed.
- **k-anonymity**: every released row covers at least ``k`` distinct profiles (setting
  ``ADTIER_PRIVACY_K``, default 50). Rows below ``k`` are folded into one ``suppressed``
  remainder, released only if it reaches ``k`` itself. When the remainder is non-empty but below
  ``k``, the smallest released row is folded in as well (complementary suppression), so a small
  cell cannot be recovered by subtracting the released rows from the totals.
- No profile id is ever part of an answer: queries aggregate, and only counts leave.

This is the exact release (admin keys). Advertiser keys get differentially private counts with
a noisy k-threshold and a budget on top: ``adtier.privacy`` and ``adtier.measure.noisy``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adtier.api_error import ApiError

__all__ = ["DEFAULT_K", "CampaignInfo", "fold_small_rows", "Folded", "not_found"]

DEFAULT_K = 50


@dataclass(frozen=True)
class CampaignInfo:
    campaign_id: str
    advertiser_id: str
    start_date: Any
    end_date: Any
    frequency_cap: int
    holdout_percent: float
    promoted_title_id: str | None
    promoted_genre: str | None


def not_found(campaign_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no campaign {campaign_id!r}")


@dataclass
class Folded:
    """Rows kept (each covers >= k profiles) and the keys folded into the remainder."""

    released: list[dict[str, Any]]
    folded_keys: list[Any] = field(default_factory=list)


def fold_small_rows(rows: Sequence[dict[str, Any]], k: int, key: str,
                    covered: str = "profiles") -> Folded:
    """Primary suppression: rows covering fewer than ``k`` profiles are folded.

    Answers the rows released and the keys folded, in a stable order (smallest first). The
    caller decides on complementary suppression with ``fold_until_k`` once it knows the
    remainder's exact coverage (coverage is not additive across overlapping rows).
    """
    released, folded = [], []
    for row in rows:
        (released if row[covered] >= k else folded).append(row)
    return Folded(released, [r[key] for r in sorted(folded, key=lambda r: r[covered])])


def fold_until_k(folded: Folded, k: int, key: str, remainder_coverage: Callable[[list], int],
                 covered: str = "profiles") -> tuple[Folded, int]:
    """Complementary suppression: while the remainder is non-empty and below ``k``, fold the
    smallest released row too. Answers the final split and the remainder's coverage."""
    coverage = remainder_coverage(folded.folded_keys) if folded.folded_keys else 0
    while 0 < coverage < k and folded.released:
        smallest = min(folded.released, key=lambda r: r[covered])
        folded.released.remove(smallest)
        folded.folded_keys.append(smallest[key])
        coverage = remainder_coverage(folded.folded_keys)
    return folded, coverage
