"""The synthetic world: households and profiles with latent traits, and the catalog.

Everything is drawn from the seed, in bulk: profile traits are NumPy arrays (one row a profile),
the catalog (titles, advertisers, campaigns, creatives) is small and kept both as arrays for the
generator and as the catalog API's JSON items (the README tour shows them) for loading.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from adtier.simulate import params as P
from adtier.simulate.ids import crc32_rows, decimal_ids, holdout_mask, matrix_strings

__all__ = ["Catalog", "World", "build_world", "build_catalog", "default_start"]

DAY_MS = 86_400_000

_ADVERTISERS: tuple[tuple[str, str, str], ...] = (
    ("adv-house", "Streamly Originals", "IAB1"),
    ("adv-01", "Northwind Motors", "IAB2"),
    ("adv-02", "Bluebird Bank", "IAB13"),
    ("adv-03", "Fresh Table Foods", "IAB8"),
    ("adv-04", "Nimbus Phones", "IAB19"),
    ("adv-05", "Wanderlust Travel", "IAB20"),
    ("adv-06", "Peak Athletics", "IAB17"),
    ("adv-07", "Lumen Beauty", "IAB18"),
    ("adv-08", "HomeNest", "IAB10"),
    ("adv-09", "VitaWell", "IAB7"),
    ("adv-10", "ShopSmart", "IAB22"),
)
_THEMES = ("Spring Launch", "Always On", "Brand Story", "Holiday Push", "New Range", "Summer Sale")
_ADJ = ("Silent", "Golden", "Broken", "Hidden", "Last", "Crimson", "Electric", "Distant", "Wild",
        "Quiet", "Burning", "Frozen", "Secret", "Little", "Endless", "Midnight")
_NOUN = ("Harbor", "Kingdom", "Signal", "Garden", "Frontier", "Promise", "Orbit", "River",
         "Letters", "Machine", "Summer", "Detective", "Island", "Circus", "Empire", "Road")
_MATURITY = {
    "kids": ("TV-Y", "TV-Y7", "G"),
    "family": ("PG", "TV-G", "TV-PG"),
    "adult": ("PG-13", "R", "TV-14", "TV-MA"),
}
FILMS_PER_GENRE = 20
SERIES_PER_GENRE = 5


def default_start(days: int, today: dt.date | None = None) -> dt.date:
    """The first simulated day: the window ends when yesterday begins, so sessions that run
    past its last midnight are still in the past, and the window is inside the retention."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    return today - dt.timedelta(days=days + 1)


@dataclass
class Catalog:
    advertisers: list[dict]
    campaigns: list[dict]
    creatives: list[dict]
    titles: list[dict]
    # watchable content (films and episodes), by index
    content_ids: list[str]
    content_duration: np.ndarray  # ms
    content_genre: np.ndarray  # primary genre index
    content_genres: np.ndarray  # (n_content, n_genres) bool: every genre of the title
    content_next: np.ndarray  # the next episode's index, or -1
    # shows (a film or a series) by genre, for drawing: genre g + within-genre CDF, ascending
    show_key: np.ndarray
    show_first: np.ndarray  # first content index of the show
    show_episodes: np.ndarray  # episodes (1 for a film)
    # campaigns, by index
    campaign_ids: list[str]
    cmp_category: np.ndarray  # index into params.AD_CATEGORIES
    cmp_weight: np.ndarray
    cmp_cap: np.ndarray  # impressions per profile per day, 0 = no cap
    cmp_holdout: np.ndarray  # percent
    cmp_active: np.ndarray  # (n_campaigns, days) bool: inside the flight
    cmp_filler: np.ndarray  # no cap, no holdout, whole window: what a capped slot is given
    cmp_promo_content: np.ndarray  # promoted title (content index) or -1
    cmp_promo_genre: np.ndarray  # promoted genre index or -1
    cmp_lift: np.ndarray  # planted per-session lift (0 for non-promos)
    cmp_creative_first: np.ndarray
    cmp_creative_count: np.ndarray
    creative_ids: list[str]
    creative_duration: np.ndarray

    @property
    def promo_campaigns(self) -> np.ndarray:
        return np.nonzero(self.cmp_lift > 0)[0]


@dataclass
class World:
    seed: int
    n_profiles: int
    days: int
    start: dt.date
    catalog: Catalog
    n_accounts: int
    account: np.ndarray  # account index of each profile
    kids: np.ndarray  # bool
    opted_out: np.ndarray  # bool (adults only)
    country: np.ndarray  # index into params.COUNTRIES (per household)
    primary_device: np.ndarray  # index into params.DEVICES
    activity: np.ndarray  # expected sessions per day
    genre_pref: np.ndarray  # (n, n_genres), rows sum to 1
    daypart_pref: np.ndarray  # (n, 4)
    affinity: np.ndarray  # (n, n_categories) ad-category affinity, ~1 on average
    skip_propensity: np.ndarray
    fatigue: np.ndarray  # skip chance grows by this share with every earlier exposure
    click_propensity: np.ndarray
    mute_propensity: np.ndarray
    pause_propensity: np.ndarray
    profile_crc: np.ndarray  # CRC-32 of the profile id (holdout hash input)
    holdout: np.ndarray  # (n, n_campaigns) bool: in the campaign's holdout
    id_width: int = 7
    _pref_max: np.ndarray | None = field(default=None, repr=False)

    @property
    def start_ms(self) -> int:
        midnight = dt.datetime.combine(self.start, dt.time(), dt.timezone.utc)
        return int(midnight.timestamp()) * 1000

    @property
    def pref_max(self) -> np.ndarray:
        if self._pref_max is None:
            self._pref_max = self.genre_pref.max(axis=1)
        return self._pref_max

    def profile_id_matrix(self, index: np.ndarray) -> np.ndarray:
        return decimal_ids("pf", index, self.id_width)

    def account_id_matrix(self, account: np.ndarray) -> np.ndarray:
        return decimal_ids("ac", account, self.id_width)

    def profile_ids(self, index: np.ndarray | None = None) -> np.ndarray:
        index = np.arange(self.n_profiles) if index is None else index
        return matrix_strings(self.profile_id_matrix(index)).astype(str)

    def profile_id(self, index: int) -> str:
        return "pf" + str(index).zfill(self.id_width)

    def account_id(self, account: int) -> str:
        return "ac" + str(account).zfill(self.id_width)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_profiles // P.CHUNK_PROFILES)


def _gamma_rows(rng: np.random.Generator, alpha: np.ndarray, n: int) -> np.ndarray:
    draws = rng.gamma(np.broadcast_to(alpha, (n, len(alpha))), 1.0).astype(np.float32)
    draws += 1e-6
    return draws / draws.sum(axis=1, keepdims=True)


def build_world(seed: int, n_profiles: int, days: int, start: dt.date | None = None) -> World:
    if n_profiles < 1 or days < 1:
        raise ValueError("a world needs at least one profile and one day")
    start = start or default_start(days)
    rng = np.random.default_rng([seed, 0])
    catalog = build_catalog(seed, days, start)

    # Households: accounts of 1..5 profiles; the first profile of an account is its owner.
    sizes = rng.choice(5, size=n_profiles // 2 + 1, p=P.ACCOUNT_SIZE_WEIGHTS) + 1
    ends = np.cumsum(sizes)
    n_accounts = int(np.searchsorted(ends, n_profiles) + 1)
    sizes = sizes[:n_accounts]
    account = np.repeat(np.arange(n_accounts, dtype=np.int32), sizes)[:n_profiles]
    first_of_account = np.r_[0, ends[:-1]][:n_accounts]
    is_owner = np.arange(n_profiles) == first_of_account[account]
    n_members = max(1, int((~is_owner).sum()))
    kids = ~is_owner & (rng.random(n_profiles) < min(0.6, P.KIDS_SHARE * n_profiles / n_members))
    opted_out = ~kids & (rng.random(n_profiles) < P.OPT_OUT_SHARE)
    country = rng.choice(len(P.COUNTRIES), size=n_accounts, p=P.COUNTRY_WEIGHTS)
    country = country.astype(np.uint8)[account]
    primary_device = rng.choice(len(P.DEVICES), size=n_profiles, p=P.DEVICE_WEIGHTS)
    primary_device = primary_device.astype(np.uint8)

    activity = rng.gamma(0.8, 0.15, n_profiles).astype(np.float32)
    genre_pref = _gamma_rows(rng, np.full(len(P.GENRES), 0.45), n_profiles)
    kid_cols = np.array([g in P.KIDS_GENRES for g in P.GENRES])
    genre_pref[np.ix_(kids, ~kid_cols)] = 0.0
    genre_pref[np.ix_(~kids, kid_cols)] *= 0.15
    genre_pref[kids & (genre_pref[:, kid_cols].sum(axis=1) == 0)] = kid_cols / kid_cols.sum()
    genre_pref /= genre_pref.sum(axis=1, keepdims=True)
    daypart_pref = _gamma_rows(rng, 4.0 * P.DAYPART_PRIOR, n_profiles)
    affinity = rng.lognormal(-0.18, 0.6, (n_profiles, len(P.AD_CATEGORIES))).astype(np.float32)
    skip = rng.beta(2.0, 5.0, n_profiles).astype(np.float32)
    fatigue = rng.gamma(2.0, 0.05, n_profiles).astype(np.float32)
    click = rng.beta(1.2, 80.0, n_profiles).astype(np.float32)
    mute = rng.beta(1.0, 25.0, n_profiles).astype(np.float32)
    pause = rng.beta(1.0, 40.0, n_profiles).astype(np.float32)

    width = max(7, len(str(n_profiles - 1)), len(str(n_accounts - 1)))
    world = World(
        seed=seed, n_profiles=n_profiles, days=days, start=start, catalog=catalog,
        n_accounts=n_accounts, account=account, kids=kids, opted_out=opted_out, country=country,
        primary_device=primary_device, activity=activity, genre_pref=genre_pref,
        daypart_pref=daypart_pref, affinity=affinity, skip_propensity=skip, fatigue=fatigue,
        click_propensity=click, mute_propensity=mute, pause_propensity=pause,
        profile_crc=np.empty(0, np.uint32), holdout=np.empty((0, 0), bool), id_width=width,
    )
    world.profile_crc = crc32_rows(world.profile_id_matrix(np.arange(n_profiles)))
    world.holdout = np.zeros((n_profiles, len(catalog.campaign_ids)), bool)
    for c, campaign_id in enumerate(catalog.campaign_ids):
        if catalog.cmp_holdout[c] > 0:
            world.holdout[:, c] = holdout_mask(world.profile_crc, campaign_id,
                                               catalog.cmp_holdout[c])
    return world


def _name(rng: np.random.Generator) -> str:
    return f"The {_ADJ[rng.integers(len(_ADJ))]} {_NOUN[rng.integers(len(_NOUN))]}"


def build_catalog(seed: int, days: int, start: dt.date) -> Catalog:
    rng = np.random.default_rng([seed, 2])
    n_genres = len(P.GENRES)
    titles: list[dict] = []
    content_ids: list[str] = []
    duration: list[int] = []
    genre_of: list[int] = []
    genres_of: list[list[int]] = []
    next_of: list[int] = []
    show_genre: list[int] = []
    show_first: list[int] = []
    show_episodes: list[int] = []
    show_weight: list[float] = []

    def genres_for(g: int) -> list[int]:
        pool = [i for i, name in enumerate(P.GENRES)
                if (name in P.KIDS_GENRES) == (P.GENRES[g] in P.KIDS_GENRES) and i != g]
        size = min(len(pool), int(rng.integers(0, 3)))
        extra = rng.choice(pool, size=size, replace=False).tolist() if size else []
        return [g, *extra]

    def maturity(g: int) -> str:
        name = P.GENRES[g]
        pool = _MATURITY[name if name in P.KIDS_GENRES else "adult"]
        return pool[rng.integers(len(pool))]

    film_no = series_no = 0
    for g in range(n_genres):
        weights = 1.0 / (rng.permutation(FILMS_PER_GENRE + SERIES_PER_GENRE) + 1.0) ** 0.9
        for s in range(FILMS_PER_GENRE + SERIES_PER_GENRE):
            gs = genres_for(g)
            show_genre.append(g)
            show_weight.append(float(weights[s]))
            show_first.append(len(content_ids))
            if s < FILMS_PER_GENRE:
                film_no += 1
                cid = f"mv-{film_no:04d}"
                ms = int(rng.integers(85, 151)) * 60_000
                titles.append({"content_id": cid, "name": _name(rng), "kind": "film",
                               "genres": [P.GENRES[i] for i in gs], "maturity": maturity(g),
                               "duration_ms": ms})
                content_ids.append(cid)
                duration.append(ms)
                genre_of.append(g)
                genres_of.append(gs)
                next_of.append(-1)
                show_episodes.append(1)
            else:
                series_no += 1
                sid = f"sr-{series_no:03d}"
                n_eps = int(rng.integers(4, 11))
                base = int(rng.integers(22, 61))
                rating = maturity(g)
                name = _name(rng)
                titles.append({"content_id": sid, "name": name, "kind": "series",
                               "genres": [P.GENRES[i] for i in gs], "maturity": rating,
                               "duration_ms": 0})
                first = len(content_ids)
                for e in range(n_eps):
                    cid = f"{sid}-e{e + 1:02d}"
                    ms = (base + int(rng.integers(-3, 4))) * 60_000
                    titles.append({"content_id": cid, "name": f"{name}: Episode {e + 1}",
                                   "kind": "episode", "series_id": sid,
                                   "genres": [P.GENRES[i] for i in gs], "maturity": rating,
                                   "duration_ms": ms})
                    content_ids.append(cid)
                    duration.append(ms)
                    genre_of.append(g)
                    genres_of.append(gs)
                    next_of.append(first + e + 1 if e + 1 < n_eps else -1)
                show_episodes.append(n_eps)

    show_genre_a = np.array(show_genre)
    show_weight_a = np.array(show_weight)
    show_key = np.empty(len(show_genre_a))
    for g in range(n_genres):
        idx = np.nonzero(show_genre_a == g)[0]
        cdf = np.cumsum(show_weight_a[idx])
        show_key[idx] = g + cdf / cdf[-1]
    content_genres = np.zeros((len(content_ids), n_genres), bool)
    for i, gs in enumerate(genres_of):
        content_genres[i, gs] = True

    # Advertisers, campaigns, creatives.
    advertisers = [{"advertiser_id": a, "name": n} for a, n, _ in _ADVERTISERS]
    campaigns: list[dict] = []
    meta: list[tuple[int, float, int, float, int, int, bool, int, int, float]] = []
    last = days - 1
    # house promos: three films and one genre, each with a 20% holdout
    adult_genres = [g for g in range(n_genres) if P.GENRES[g] not in P.KIDS_GENRES]
    promo_genres = rng.choice(adult_genres, size=4, replace=False)
    films = np.array([s for s in range(len(show_first)) if show_episodes[s] == 1])
    for n, g in enumerate(promo_genres):
        campaign_id = f"cmp-house-{n + 1}"
        start_day = min(n // 2, last)
        if n < 3:
            # a mid-popular film of that genre: visible, but not the genre's top title
            candidates = films[show_genre_a[films] == g]
            ranked = candidates[np.argsort(-show_weight_a[candidates])]
            content = show_first[int(ranked[min(4, len(ranked) - 1)])]
            item = {"promoted_title_id": content_ids[content]}
            promo_content, promo_genre, lift = content, -1, P.PROMO_TITLE_LIFT
            label = f"Watch {titles_by_id(titles)[content_ids[content]]}"
        else:
            item = {"promoted_genre": P.GENRES[g]}
            promo_content, promo_genre, lift = -1, int(g), P.PROMO_GENRE_LIFT
            label = f"{P.GENRES[g].replace('_', ' ').title()} Week"
        campaigns.append({"campaign_id": campaign_id, "advertiser_id": "adv-house",
                          "name": f"Streamly Originals - {label}", "ad_category": "IAB1",
                          "start_date": (start + dt.timedelta(days=start_day)).isoformat(),
                          "end_date": (start + dt.timedelta(days=last)).isoformat(),
                          "frequency_cap": 3, "holdout_percent": 20.0, **item})
        meta.append((0, 1.2, 3, 20.0, start_day, last, False, promo_content, promo_genre, lift))
    for a, (advertiser_id, adv_name, category) in enumerate(_ADVERTISERS[1:], start=1):
        cat = P.AD_CATEGORIES.index(category)
        for k in range(2):
            campaign_id = f"cmp-{a:02d}-{k + 1}"
            if k == 0 and a <= 4:  # always-on fillers: no cap, no holdout, the whole window
                cap, holdout, first_day, last_day, filler = 0, 0.0, 0, last, True
            elif k == 0:
                cap, holdout = int(rng.choice([3, 4, 6])), float(rng.choice([0.0, 10.0]))
                first_day, last_day, filler = 0, last, False
            else:
                cap, holdout = int(rng.choice([2, 3, 5])), float(rng.choice([0.0, 0.0, 10.0, 15.0]))
                first_day = int(rng.integers(0, max(1, days // 3 + 1)))
                last_day = int(rng.integers(min(last, first_day + days // 2), last + 1))
                filler = False
            theme = _THEMES[int(rng.integers(len(_THEMES)))]
            campaigns.append({"campaign_id": campaign_id, "advertiser_id": advertiser_id,
                              "name": f"{adv_name} - {theme}", "ad_category": category,
                              "start_date": (start + dt.timedelta(days=first_day)).isoformat(),
                              "end_date": (start + dt.timedelta(days=last_day)).isoformat(),
                              "frequency_cap": cap, "holdout_percent": holdout})
            meta.append((cat, float(rng.uniform(0.6, 1.4)), cap, holdout, first_day, last_day,
                         filler, -1, -1, 0.0))

    creatives: list[dict] = []
    creative_ids: list[str] = []
    creative_duration: list[int] = []
    cr_first: list[int] = []
    cr_count: list[int] = []
    for c, campaign in enumerate(campaigns):
        n_cr = int(rng.integers(1, 4))
        cr_first.append(len(creative_ids))
        cr_count.append(n_cr)
        for k in range(n_cr):
            ms = int(rng.choice([6_000, 15_000, 30_000, 30_000, 60_000],
                                p=[0.1, 0.35, 0.25, 0.2, 0.1]))
            creative_id = f"cr-{c + 1:03d}-{k + 1}"
            creatives.append({"creative_id": creative_id, "campaign_id": campaign["campaign_id"],
                              "name": f"{campaign['name']} ({ms // 1000}s #{k + 1})",
                              "duration_ms": ms})
            creative_ids.append(creative_id)
            creative_duration.append(ms)

    m = list(zip(*meta))
    active = np.zeros((len(campaigns), days), bool)
    for c, (first_day, last_day) in enumerate(zip(m[4], m[5])):
        active[c, first_day:last_day + 1] = True
    return Catalog(
        advertisers=advertisers, campaigns=campaigns, creatives=creatives, titles=titles,
        content_ids=content_ids, content_duration=np.array(duration, np.int64),
        content_genre=np.array(genre_of, np.int16), content_genres=content_genres,
        content_next=np.array(next_of, np.int32), show_key=show_key,
        show_first=np.array(show_first, np.int32), show_episodes=np.array(show_episodes, np.int32),
        campaign_ids=[c["campaign_id"] for c in campaigns],
        cmp_category=np.array(m[0], np.int16), cmp_weight=np.array(m[1], np.float32),
        cmp_cap=np.array(m[2], np.int32), cmp_holdout=np.array(m[3]), cmp_active=active,
        cmp_filler=np.array(m[6], bool), cmp_promo_content=np.array(m[7], np.int32),
        cmp_promo_genre=np.array(m[8], np.int32), cmp_lift=np.array(m[9]),
        cmp_creative_first=np.array(cr_first, np.int32),
        cmp_creative_count=np.array(cr_count, np.int32), creative_ids=creative_ids,
        creative_duration=np.array(creative_duration, np.int64),
    )


def titles_by_id(titles: list[dict]) -> dict[str, str]:
    return {t["content_id"]: t["name"] for t in titles}
