"""Native histograms: the bucket of a duration, the bucket limit, and exactness across
backfill, live reading, restarts and state files from before native histograms."""

from __future__ import annotations

import json
import random
from bisect import bisect_right
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from exporter import config
from exporter.aggregates import Aggregates, thresholds_us
from exporter.native import MAX_SCHEMA, MIN_SCHEMA, NativeCell, NativeSpec, Positions
from tests.exporter_fixtures import wait_for
from tests.test_config import minimal, single_problem, write

HIST = "pggit_operation_duration_seconds"
EDGES_US = [0, 1, 2, 3, 7, 15624, 15625, 15626, 999_999, 1_000_000, 1_000_001,
            2**20, 2**20 + 1, 123_456_789, 60_000_000, 2**40]


def test_bucket_of_a_duration_is_the_one_prometheus_defines() -> None:
    """Bucket i holds (2^((i-1)/2^s), 2^(i/2^s)]; a power of two is its bucket's upper bound."""
    rng = random.Random(1)
    for schema in range(MIN_SCHEMA, MAX_SCHEMA + 1):
        spec = NativeSpec(schema)
        width = 2.0 ** -schema
        assert spec.index(1.0) == 0
        if schema >= 0:
            assert spec.index(0.015625) == -6 * 2**schema
        for us in EDGES_US[1:] + [rng.randrange(1, 10**10) for _ in range(500)]:
            i = spec.index(us / 1e6)
            assert i is not None
            assert 2 ** ((i - 1) * width) < us / 1e6 * (1 + 1e-12)
            assert us / 1e6 <= 2 ** (i * width) * (1 + 1e-12)
        assert spec.index(0.0) is None


def test_halving_the_resolution_keeps_every_count_and_respects_the_limit() -> None:
    spec = NativeSpec(8, max_buckets=20)
    cell = NativeCell(spec.schema)
    rng = random.Random(2)
    values = [rng.lognormvariate(-5, 2) for _ in range(5000)]
    for v in values:
        cell.add_one(spec, spec.index(v))
    assert cell.count() == len(values)
    assert len(cell.buckets) <= 20
    assert cell.schema < 8
    width = 2.0 ** -cell.schema
    for v in values[:200]:
        i = NativeSpec(cell.schema).index(v)
        assert 2 ** ((i - 1) * width) < v * (1 + 1e-12) and v <= 2 ** (i * width) * (1 + 1e-12)
        assert cell.buckets[i] > 0


def test_resulting_buckets_do_not_depend_on_the_order_or_batching_of_rows() -> None:
    """A backfill adds grouped counts, live reading one page at a time: both must agree."""
    spec = NativeSpec(6, max_buckets=30)
    rng = random.Random(3)
    values = [rng.lognormvariate(-6, 1.8) for _ in range(3000)]
    one_by_one = NativeCell(spec.schema)
    for v in values:
        one_by_one.add_one(spec, spec.index(v))
    for trial in range(5):
        rng.shuffle(values)
        batched = NativeCell(spec.schema)
        step = 1 + trial * 97
        for start in range(0, len(values), step):
            page = Counter(spec.index(v) for v in values[start:start + step])
            batched.add(spec, page)
        assert batched == one_by_one


def test_a_lower_configured_schema_merges_saved_buckets_down() -> None:
    fine = Aggregates({HIST: (0.01, 1.0)}, NativeSpec(8))
    for v in (0.001, 0.002, 0.5, 3.0, 0.0):
        fine.observe(HIST, ("commit", "main"), v)
    coarse = Aggregates.from_json(json.loads(json.dumps(fine.to_json())), {HIST: (0.01, 1.0)},
                                  NativeSpec(2))
    cell = coarse.native[HIST][("commit", "main")]
    assert cell.schema == 2
    assert cell.count() == 5 and cell.zero == 1
    assert cell == seed_from_values(NativeSpec(2), (0.001, 0.002, 0.5, 3.0, 0.0))


def seed_from_values(spec: NativeSpec, values: tuple[float, ...]) -> NativeCell:
    cell = NativeCell(spec.schema)
    for v in values:
        cell.add_one(spec, spec.index(v))
    return cell


def test_state_file_from_before_native_histograms_gets_buckets_seeded_from_classic() -> None:
    bounds = (0.001, 0.01, 0.1)
    old = Aggregates({HIST: bounds})
    for v in (0.0005, 0.002, 0.003, 0.05, 7.0):
        old.observe(HIST, ("commit", "main"), v)
    saved = old.to_json()
    del saved["native"]
    restored = Aggregates.from_json(json.loads(json.dumps(saved)), {HIST: bounds})
    spec = restored.native_spec
    cell = restored.native[HIST][("commit", "main")]
    assert cell.count() == 5
    assert cell.buckets == {spec.index(0.001): 1, spec.index(0.01): 2, spec.index(0.1): 1,
                            spec.index(0.1) + 1: 1}
    assert restored.histograms == old.histograms


def _expected_native(dsn: str, schema: int) -> dict[str, dict[int, int]]:
    """Native buckets per operation computed by SQL from the definition (a logarithm), not
    from the exporter's thresholds."""
    out: dict[str, dict[int, int]] = {}
    with psycopg.connect(dsn) as conn:
        for op, index, n in conn.execute(
                """SELECT operation_type,
                          ceil(log(2, duration_microseconds / 1e6) * 2 ^ %s)::int, count(*)
                   FROM pggit.performance_metrics GROUP BY 1, 2""", (schema,)):
            out.setdefault(op, {})[index] = n
    return out


def _native_by_operation(agg: Aggregates) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for (op, _branch), cell in agg.native[HIST].items():
        merged = out.setdefault(op, {})
        for i, c in cell.buckets.items():
            merged[i] = merged.get(i, 0) + c
    return out


def _record(dsn: str, durations: list[int], seed: int) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for us in durations:
            conn.execute("SELECT pggit.record_performance_metric(%s, %s)",
                         (rng.choice(("commit", "merge", "rollback")), us))


def _caught_up(exporter, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        want = conn.execute("SELECT count(*) FROM pggit.performance_metrics").fetchone()[0]
    wait_for(lambda: exporter.poller.caught_up and sum(
        c.count() for c in exporter.poller.agg.native[HIST].values()) == want,
        what="every row in the native histograms")


@pytest.mark.parametrize("schema", [3, 8])
def test_backfill_live_rows_and_restart_count_native_buckets_exactly(
        pggit_dsn: str, run_exporter, tmp_path: Path, schema: int) -> None:
    rng = random.Random(schema)
    durations = EDGES_US[1:-1] + [int(rng.lognormvariate(8, 2)) + 1 for _ in range(600)]
    _record(pggit_dsn, durations, 1)
    opts = {"native_schema": schema, "native_max_buckets": 10_000}
    exporter = run_exporter(pggit_dsn, **opts)
    _caught_up(exporter, pggit_dsn)
    assert _native_by_operation(exporter.poller.agg) == _expected_native(pggit_dsn, schema)
    _record(pggit_dsn, [int(rng.lognormvariate(8, 2)) + 1 for _ in range(300)], 2)
    _caught_up(exporter, pggit_dsn)
    assert _native_by_operation(exporter.poller.agg) == _expected_native(pggit_dsn, schema)
    before = exporter.poller.agg.native[HIST]
    exporter.stop()
    again = run_exporter(pggit_dsn, **opts)
    _caught_up(again, pggit_dsn)
    assert again.poller.agg.native[HIST] == before


def test_exporter_upgraded_over_an_old_state_file_keeps_counts_and_adds_new_rows_exactly(
        pggit_dsn: str, run_exporter, tmp_path: Path) -> None:
    _record(pggit_dsn, [100, 2_000, 30_000, 400_000, 90_000_000], 3)
    exporter = run_exporter(pggit_dsn)
    _caught_up(exporter, pggit_dsn)
    exporter.stop()
    state = tmp_path / "state" / "main.json"
    data = json.loads(state.read_text())
    del data["aggregates"]["native"]
    state.write_text(json.dumps(data))
    upgraded = run_exporter(pggit_dsn)
    _caught_up(upgraded, pggit_dsn)
    agg = upgraded.poller.agg
    for labels, cell in agg.histograms[HIST].items():
        assert agg.native[HIST][labels].count() == sum(cell[:-1])
    seeded = _native_by_operation(agg)
    _record(pggit_dsn, [777, 5_555], 4)
    _caught_up(upgraded, pggit_dsn)
    spec = agg.native_spec
    grown = _native_by_operation(upgraded.poller.agg)
    added = {op: {i: c - seeded.get(op, {}).get(i, 0) for i, c in b.items()
                  if c != seeded.get(op, {}).get(i, 0)} for op, b in grown.items()}
    assert sorted(i for b in added.values() for i in b for _ in range(b[i])) == sorted(
        [spec.index(777e-6), spec.index(5555e-6)])


@pytest.mark.parametrize(("value", "key", "why"), [
    (9, "native_schema", "from -4 to 8"), (-5, "native_schema", "from -4 to 8"),
    ("5", "native_schema", "from -4 to 8"), (True, "native_schema", "from -4 to 8"),
    (0, "native_max_buckets", "at least 1"),
])
def test_bad_native_settings_are_refused_naming_the_key(
        tmp_path: Path, value: object, key: str, why: str) -> None:
    single_problem(tmp_path, minimal(**{key: value}), key, why)


def test_native_settings_reach_the_aggregates(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, minimal(native_schema=2, native_max_buckets=40)), {})
    assert cfg.native == NativeSpec(2, 40)


def test_durations_counted_in_bulk_land_where_single_observations_do() -> None:
    """The hot path counts a page's µs durations at the cell's own (possibly halved) schema;
    that must equal observing them one by one at the configured schema."""
    spec = NativeSpec(7, max_buckets=40)
    rng = random.Random(5)
    pages = [[0, 0, 1, 15625] + [int(rng.lognormvariate(9, 2)) + 1 for _ in range(200)]
             for _ in range(10)]
    bulk, single = NativeCell(spec.schema), NativeCell(spec.schema)
    by_position = NativeCell(spec.schema)
    positions = Positions(spec, thresholds_us(config.DEFAULT_BUCKETS))
    for page in pages:
        bulk.add_durations_us(spec, page)
        by_position.add_positions(
            spec, positions, [bisect_right(positions.thresholds, us) for us in page])
        for us in page:
            single.add_one(spec, spec.index(us / 1e6))
    assert bulk == single == by_position
    assert bulk.schema < 7 and bulk.zero == 20


def test_one_position_tells_the_classic_and_the_native_bucket() -> None:
    """The hot path and the backfill bisect once, among both kinds of threshold merged."""
    classic = thresholds_us(config.DEFAULT_BUCKETS)
    for spec in (NativeSpec(), NativeSpec(8), NativeSpec(-2)):
        positions = Positions(spec, classic)
        edges = {max(0, t + d) for t in classic + spec.thresholds[::3] for d in (-1, 0, 1)}
        for us in sorted(edges)[::max(1, len(edges) // 3000)]:
            p = bisect_right(positions.thresholds, us)
            assert positions.classic[p] == bisect_right(classic, us), us
            native = positions.indices(spec.schema)[p] if us else None
            assert native == spec.index(us / 1e6), us


def test_a_saved_cell_is_saved_again_after_each_change() -> None:
    """Cells keep their checkpoint text until they change; every way of changing one must
    drop it, or a restart would bring back stale counts."""
    spec = NativeSpec(5, max_buckets=3)
    cell = NativeCell(spec.schema)
    changes = [lambda: cell.add_one(spec, spec.index(0.5)),
               lambda: cell.add(spec, {spec.index(0.001): 2}),
               lambda: cell.add_durations_us(spec, [0, 70_000]),
               lambda: cell.add_one(spec, spec.index(900.0))]  # past the limit: halves
    for change in changes:
        cell.to_json()
        change()
        assert NativeCell.from_json(json.loads(json.dumps(cell.to_json()))) == cell
        assert NativeCell.from_json(json.loads(json.dumps(cell.copy().to_json()))) == cell


def test_backfill_files_durations_at_every_threshold_where_live_rows_go(
        pggit_dsn: str, run_exporter) -> None:
    """The backfill tells a row's classic and native bucket from one position among both
    sets of thresholds merged: a duration at, just below and just above every classic and
    native threshold must land in the buckets live reading files it in."""
    spec = NativeSpec()
    classic = thresholds_us(config.DEFAULT_BUCKETS)
    native = [t for t in spec.thresholds if t < 10**9]
    edges = sorted({max(1, t + d) for t in classic + native[::7] for d in (-1, 0, 1)})
    _record(pggit_dsn, edges, 3)
    exporter = run_exporter(pggit_dsn)
    _caught_up(exporter, pggit_dsn)
    live = Aggregates({HIST: config.DEFAULT_BUCKETS}, spec)
    with psycopg.connect(pggit_dsn) as conn:
        for op, us in conn.execute(
                "SELECT operation_type, duration_microseconds FROM pggit.performance_metrics"):
            cell = live.histograms[HIST].setdefault((op,), [0] * (len(classic) + 2))
            cell[bisect_right(classic, us)] += 1
            live.native_cell(HIST, (op,)).add_durations_us(spec, [us])
    got = exporter.poller.agg
    assert {k[:1]: v[:-1] for k, v in got.histograms[HIST].items()} == {
        k: v[:-1] for k, v in live.histograms[HIST].items()}
    assert {k[:1]: v for k, v in got.native[HIST].items()} == live.native[HIST]
