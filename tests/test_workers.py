"""How many workers `rr run` starts, and each worker's command line (rr_addon/workers.py)."""

import pytest

from rr_addon.workers import WorkersError, count, worker_args

REDIS = {"RR_REDIS_URL": "redis://127.0.0.1:6379/8"}


def test_workers_are_opt_in(monkeypatch):
    # per-process limits (connections per address, held approvals) multiply with workers: never by surprise
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert count(None, web=False, args=[], env=REDIS) == 1
    assert count(None, web=False, args=["--set", "rr_redis_url=redis://h/0"], env={}) == 1
    assert count(6, web=False, args=[], env=REDIS) == 6
    assert count(None, web=False, args=[], env={}) == 1  # embedded counters: one process
    assert count(None, web=False, args=["--set", "rr_redis_url="], env={}) == 1
    assert count(None, web=True, args=[], env=REDIS) == 1  # mitmweb: one process


@pytest.mark.parametrize(
    "n, web, env, message",
    [
        (2, False, {}, "needs meter counters in Redis"),
        (2, True, REDIS, "mitmweb (--web) runs as one process"),
        (0, False, REDIS, "must be 1 or more"),
    ],
)
def test_refused(n, web, env, message):
    with pytest.raises(WorkersError, match=message.replace("(", r"\(").replace(")", r"\)")):
        count(n, web=web, args=[], env=env)


def test_explicit_counts():
    assert count(1, web=True, args=[], env={}) == 1
    assert count(3, web=False, args=["--set=rr_redis_url=redis://h/0"], env={}) == 3


def test_each_worker_gets_its_own_metrics_port():
    args = ["-p", "8080", "--set", "rr_metrics_port=9100", "--set=block_global=false"]
    assert worker_args(args, 3, 1) == ["-p", "8080", "--set", "rr_metrics_port=9100", "--set=block_global=false"]
    assert worker_args(args, 3, 3) == ["-p", "8080", "--set", "rr_metrics_port=9102", "--set=block_global=false"]
    assert worker_args(["--set=rr_metrics_port=9100"], 2, 2) == ["--set=rr_metrics_port=9101"]
    assert worker_args(["--set", "rr_metrics_port=0"], 2, 2) == ["--set", "rr_metrics_port=0"]  # off stays off
    assert worker_args(args, 1, 1) == args


def test_a_hybrid_data_plane_is_one_process(tmp_path, monkeypatch):
    """Its configuration link, cache and audit spool belong to one process: more workers are refused,
    and RR_REDIS_URL does not make it start one per core."""
    from typer.testing import CliRunner

    from rr_addon.cli import app

    result = CliRunner().invoke(app, ["run", "--dataplane-bundle", str(tmp_path / "dp.json"), "--workers", "2"], env={"COLUMNS": "300", "RR_HOME": str(tmp_path)})
    assert result.exit_code == 1 and "a hybrid data plane runs as one process" in result.output, result.output
