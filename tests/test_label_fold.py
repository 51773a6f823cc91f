"""The label cap's `__other__` means "folded" and nothing else, and its counter is exact.

pggit_exporter_label_overflow_total is counted in the poll that folds the rows and saved in the
same checkpoint as the read position, so neither a failed poll that is read again nor a
kill -9 moves it away from the rows really folded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from exporter.labels import OTHER, LabelCap, escape
from tests.exporter_fixtures import ExporterProcess, InProcess, total, wait_for, write_config
from tests.test_bad_input import counted, ready, record
from tests.test_self_metrics import BROKEN_VIEW


def test_values_that_look_folded_are_escaped_and_stay_distinct() -> None:
    assert escape("commit") == "commit"
    assert escape(OTHER) == "_" + OTHER
    assert escape("_" + OTHER) == "__" + OTHER
    assert escape("__other__x") == "__other__x"
    cap = LabelCap(max_values=1, max_length=200)
    assert cap("operation_type", OTHER) == "___other__"
    assert cap("operation_type", "commit") == OTHER
    assert cap.peek("operation_type", OTHER) == "___other__"


def test_an_operation_type_named_other_never_merges_with_folded_rows(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    exporter = run_exporter(pggit_dsn, max_label_values=2,
                            database={"disabled_collectors": ["performance_operation_types"]})
    ready(exporter)
    for op in (OTHER, "commit", "merge", "rollback", OTHER):
        record(pggit_dsn, op)
    samples = counted(exporter, 5)
    hist = "pggit_operation_duration_seconds_count"
    assert total(samples, hist, operation_type="_" + OTHER) == 2
    assert total(samples, hist, operation_type="commit") == 1
    assert total(samples, hist, operation_type=OTHER) == 2
    assert total(samples, "pggit_exporter_label_overflow_total", label="operation_type") == 2


def folded_rows(samples: dict) -> float:
    return total(samples, "pggit_operation_duration_seconds_count", operation_type=OTHER)


def test_a_failed_poll_that_is_read_again_counts_its_folds_once(
        pggit_dsn: str, run_exporter: Callable[..., InProcess]) -> None:
    """The first poll backfills (folding 4 rows) and then fails on a broken table; the next
    poll backfills again. An overflow counter set outside the checkpoint counted 8."""
    ops = ["a", "b", "c", "d", "e", "f"]
    for op in ops:
        record(pggit_dsn, op)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE pggit.test_switch (broken boolean)")
        conn.execute("INSERT INTO pggit.test_switch VALUES (true)")
        conn.execute(BROKEN_VIEW)
        conn.execute("INSERT INTO pggit.anomalies_data (metric_id, operation_type,"
                     " anomaly_type, severity) SELECT max(metric_id), 'a', 'COMBINED',"
                     " 'INFO' FROM pggit.performance_metrics")
    exporter = run_exporter(pggit_dsn, max_label_values=2,
                            database={"disabled_collectors": ["performance_operation_types"]})
    samples = counted(exporter, 6)
    assert total(samples, "pggit_exporter_errors_total", stage="read") >= 1
    assert folded_rows(samples) == 4
    assert total(samples, "pggit_exporter_label_overflow_total", label="operation_type") == 4


def test_overflow_count_is_exact_across_kill_9(pggit_dsn: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yml", pggit_dsn, tmp_path / "state",
                       max_label_values=2,
                       database={"disabled_collectors": ["performance_operation_types"]})
    written = 0

    def write(ops: list[str]) -> None:
        nonlocal written
        for op in ops:
            record(pggit_dsn, op)
        written += len(ops)

    def settled(proc: ExporterProcess) -> dict:
        return wait_for(lambda: (s := proc.samples()) and
                        total(s, "pggit_operation_duration_seconds_count") == written and s,
                        what=f"{written} rows counted")

    proc = ExporterProcess(cfg)
    try:
        # First poll over an empty table: the rows below are then read in id order, so a and
        # b take the cap's two places (a backfill would admit groups in the query's order).
        wait_for(lambda: total(proc.samples(), "pggit_up") == 1, what="the first poll")
        write(["a", "b", "c", "d", "e"])
        settled(proc)
        write(["f", "g", "a"])
        proc.kill9()
    finally:
        proc.close()
    write(["h", "b", "i"])
    proc = ExporterProcess(cfg)
    try:
        samples = settled(proc)
        assert folded_rows(samples) == 7
        assert total(samples, "pggit_exporter_label_overflow_total",
                     label="operation_type") == 7
    finally:
        proc.close()
