"""Progress lines of long jobs: the first and last step always, others once the interval passed."""

import logging

from smile_vlm.progress import ProgressLog


def test_first_and_last_step_are_logged_and_the_interval_bounds_the_rest(caplog):
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        quiet = ProgressLog(log, "job", 5, "samples rendered", interval_s=1e9)
        for _ in range(5):
            quiet.step()
    lines = [r.getMessage().split(" (")[0] for r in caplog.records]
    assert lines == ["job: 1 of 5 samples rendered", "job: 5 of 5 samples rendered"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test.progress"):
        every = ProgressLog(log, "job", 3, "samples rendered", interval_s=0.0)
        for _ in range(3):
            every.step()
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "job: 1 of 3 samples rendered", "job: 2 of 3 samples rendered", "job: 3 of 3 samples rendered"]
