"""The cyclic garbage collector's pause (dsl/collector.py: rule parsing, backtests and feedback reports
use it): overlapping pauses keep it off until the last one ends, and it comes back only if it was on."""

import gc

from closedloop.dsl.collector import gc_paused


def test_overlapping_reports_resume_the_collector_after_the_last():
    assert gc.isenabled()
    first, second = gc_paused(), gc_paused()
    first.__enter__()
    second.__enter__()
    assert not gc.isenabled()
    first.__exit__(None, None, None)     # reports end in any order
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_failing_report_resumes_it_too():
    try:
        with gc_paused():
            raise ValueError
    except ValueError:
        pass
    assert gc.isenabled()


def test_a_collector_turned_off_elsewhere_stays_off():
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
