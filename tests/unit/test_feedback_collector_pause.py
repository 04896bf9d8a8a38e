"""The feedback report pauses the cyclic garbage collector while it runs (report._collector_paused):
overlapping reports keep it paused until the last one ends, and it comes back only if it was on."""

import gc

from closedloop.server.feedback.report import _collector_paused


def test_overlapping_reports_resume_the_collector_after_the_last():
    assert gc.isenabled()
    first, second = _collector_paused(), _collector_paused()
    first.__enter__()
    second.__enter__()
    assert not gc.isenabled()
    first.__exit__(None, None, None)     # reports end in any order
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_failing_report_resumes_it_too():
    try:
        with _collector_paused():
            raise ValueError
    except ValueError:
        pass
    assert gc.isenabled()


def test_a_collector_turned_off_elsewhere_stays_off():
    gc.disable()
    try:
        with _collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
