"""The benchmark (bench/run.py) end to end at a tiny size, so it keeps working.

It starts everything the full run starts (Postgres, Redis, bin/serve with two
workers behind the generated Nginx site, both baselines, k6, wrk) but with a
handful of sessions and a second or two per step. It asserts on the shape of
the results and on the rendered report, never on a timing: this machine's
speed is what the benchmark measures, not what the tests judge.
"""

import json
import shutil

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.slow, pytest.mark.xdist_group("bench")]

SESSIONS, EVENTS = 4, 2


@pytest.fixture(scope="module")
def bench_results(tmp_path_factory):
    from bench import procs, run

    for tool in ("nginx", "wrk", "redis-server", "k6"):
        try:
            procs.find_tool(tool)
        except SystemExit:
            pytest.fail(f"`{tool}` is not installed: ./scripts/test installs it", pytrace=False)
    work = tmp_path_factory.mktemp("bench")
    out = work / "out"
    argv = [
        "--sizes", str(SESSIONS), "--events", str(EVENTS),
        "--capacity-sessions", "2", "--capacity-seconds", "1",
        "--memory-sessions", "5", "--wrk-seconds", "1", "--wrk-connections", "4",
        "--startup-repeats", "1", "--pause", "0", "--profile-seconds", "0",
        "--workdir", str(work / "run"),
        "--output", str(out / "results.json"),
        "--markdown", str(out / "BENCHMARKS.md"),
        "--plot", str(out / "latency.png"),
    ]  # fmt: skip
    assert run.main(argv) == 0
    yield json.loads((out / "results.json").read_text()), out
    shutil.rmtree(work / "run", ignore_errors=True)


def test_liveview_runs_for_every_target(bench_results):
    results, _ = bench_results
    assert set(results["liveview"]) == {"ours", "echo", "djust_new"}
    for name, target in results["liveview"].items():
        (run,) = target["runs"]
        assert run["sessions"] == SESSIONS, name
        assert run["sessions_mounted"] == SESSIONS, (name, run)
        assert run["events_sent"] == SESSIONS * EVENTS, (name, run)
        for key in ("p50", "p95", "p99", "max"):
            assert isinstance(run["rtt_ms"][key], (int, float)), (name, key, run["rtt_ms"])
        for key in ("events_answered", "events_patched", "events_late_over_100ms", "errors"):
            assert isinstance(run[key], int), (name, key)
        assert isinstance(run["every_event_patched"], bool)
        assert isinstance(run["events_per_s"], float)
        assert set(run["cpu_s"]) == {"server", "nginx", "k6"}
    assert set(results["capacity"]) == {"ours", "echo", "djust_new"}


def test_baseline_ratios_and_targets(bench_results):
    results, _ = bench_results
    assert {"ours_vs_echo", "ours_vs_djust_new"} <= set(results["ratios"])
    assert {row["sessions"] for row in results["ratios"]["ours_vs_echo"]} == {SESSIONS}
    # Only the memory target applies at this size; the others need 500 and 1,000 sessions.
    assert set(results["targets"]) == {"rss_per_idle_ws_deflate_le_64kb"}
    assert isinstance(results["targets"]["rss_per_idle_ws_deflate_le_64kb"]["met"], bool)


def test_http_memory_and_startup(bench_results):
    results, _ = bench_results
    http = {(row["target"], row["url_path"]): row for row in results["http"]}
    assert set(http) == {("ours", "/health/live/"), ("ours", "/"), ("bare_django", "/")}
    for row in http.values():
        assert row["requests"] > 0 and row["requests_per_s"] > 0, row
        assert row["non_2xx_3xx"] == 0, row
    memory = {(row["target"], row["client_offers_deflate"]): row for row in results["memory"]}
    assert set(memory) == {("ours", True), ("ours", False), ("djust_new", True), ("djust_new", False)}
    assert all(row["negotiated"][0].startswith("permessage-deflate") for (_, d), row in memory.items() if d)
    assert all(row["negotiated"] == ["none"] for (_, d), row in memory.items() if not d)
    assert all(row["failures"] == 0 and row["sessions"] == 5 for row in memory.values())
    assert [row["workers"] for row in results["startup"]] == [1, 2]
    assert all(len(row["seconds"]) == 1 for row in results["startup"])


def test_report_renders(bench_results):
    results, out = bench_results
    markdown = (out / "BENCHMARKS.md").read_text()
    assert markdown.startswith("# Benchmarks\n")
    for heading in ("## LiveView events through Nginx", "## Capacity (closed loop)", "## HTTP through Nginx",
                    "## Memory per idle WebSocket", "## Start-up", "## Reproduce"):  # fmt: skip
        assert heading in markdown
    assert "![event round trip against concurrent sessions](latency.png)" in markdown
    assert "| this template | 4 |" in markdown
    assert (out / "latency.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # Rendering again from the JSON alone gives the same report.
    from bench import render

    render.write(results, out / "again.md", out / "latency.png")
    assert (out / "again.md").read_text() == markdown
