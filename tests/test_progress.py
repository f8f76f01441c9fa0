"""Following a log file that another process writes and replaces."""
import os

from helpers.report.progress import Followers, LogFollower, RunProgress


def test_follower_skips_the_previous_log_and_echoes_the_new_one(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("old run\n")
    lines = []
    follower = LogFollower(log, "abc", lines.append, poll=0.01)    # knows the old log's inode from here on
    follower.start()
    fresh = tmp_path / ".x.log.new"
    fresh.write_text("header\n")
    os.replace(fresh, log)
    with open(log, "a") as f:
        f.write("step 1\nstep 2 without newline")
    follower.stop()                     # drains what is there, the unfinished last line too
    assert lines == ["[abc] header", "[abc] step 1", "[abc] step 2 without newline"]


def test_followers_start_and_stop_by_key(tmp_path):
    out = []
    followers = Followers(out.append)
    followers.start("t1", tmp_path / "missing.log", "p")
    followers.stop("t1")
    followers.stop("never-started")
    assert out == [] and followers.running == {}


def test_the_run_says_how_many_steps_each_commit_ran_and_which_heavy_ones():
    progress = RunProgress()
    line = progress.finish("x[" + "a" * 40 + "]", "call", "passed",
                           {"sha": "a" * 40, "roles": "human", "build_seconds": "3.2", "image": "r/i:a",
                            "build_steps": "3 of 18 run, 15 from cache",
                            "rebuilt_heavy": "[12/18] RUN make -C /opt/nvshmem (312 s)"}, "")
    assert line is not None and "3/18 steps" in line and "rebuilt heavy: [12/18] RUN make" in line
    header, row = progress.table()
    assert "steps run" in header and " 3/18 " in row and "(rebuilt heavy: [12/18] RUN make" in row
