"""The benchmark (bench/run.py) end to end at a tiny size, so it keeps working.

It starts everything the full run starts (Postgres, Redis, bin/serve behind the
generated Nginx site, the `def`-handler copy, the baselines, k6, wrk), pinned
with taskset as the full run is, then a shorter unpinned pass, but with a
handful of sessions and a second or two per step. It asserts on the shape of
the results and on the rendered report, never on a timing: this machine's
speed is what the benchmark measures, not what the tests judge.
"""

import json
import shutil

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.slow, pytest.mark.xdist_group("bench")]

SESSIONS, EVENTS, REPEATS = 4, 2, 2
TARGETS = {"ours", "ours_def", "djust_new", "echo"}


@pytest.fixture(scope="module")
def bench_results(tmp_path_factory):
    from bench import procs, run

    for tool in ("nginx", "wrk", "redis-server", "k6", "taskset"):
        try:
            procs.find_tool(tool)
        except SystemExit:
            pytest.fail(f"`{tool}` is not installed: ./scripts/test installs it", pytrace=False)
    work = tmp_path_factory.mktemp("bench")
    out = work / "out"
    argv = [
        "--sizes", str(SESSIONS), "--events", str(EVENTS),
        "--repeats", str(REPEATS), "--unpinned-repeats", "1",
        # Two workers, so the pinning check sees a worker uvicorn spawned.
        "--workers", "2",
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


def test_both_passes_run_every_target_with_repeats(bench_results):
    results, _ = bench_results
    assert list(results["passes"]) == ["pinned", "unpinned"]
    assert results["meta"]["primary_pass"] == "pinned"
    for name, repeats in (("pinned", REPEATS), ("unpinned", 1)):
        section = results["passes"][name]
        assert section["repeats"] == repeats
        assert set(section["liveview"]) == TARGETS, name
        assert set(section["capacity"]) == TARGETS, name
        for target, data in section["liveview"].items():
            (point,) = data["runs"]
            assert point["sessions"] == SESSIONS, (name, target)
            assert len(point["repeats"]) == repeats, (name, target)
            for run in point["repeats"]:
                assert run["sessions_mounted"] == SESSIONS, (name, target, run)
                assert run["events_sent"] == SESSIONS * EVENTS, (name, target, run)
            for key in ("p50", "p99", "max"):
                assert isinstance(point["rtt_ms"][key], (int, float)), (name, target, key)
            assert isinstance(point["server_cpu_ms_per_event"], (int, float)), (name, target)
            assert set(point["cpu_s"]) == {"server", "nginx", "k6"}
            if repeats > 1:
                low, high = point["spread"]["server_cpu_ms_per_event"]
                assert low <= point["server_cpu_ms_per_event"] <= high
        http = {(row["target"], row["url_path"]) for row in section["http"]}
        assert http == {("ours", "/health/live/"), ("ours", "/"), ("bare_django", "/")}, name
        for row in section["http"]:
            assert row["requests"] > 0 and row["non_2xx_3xx"] == 0, row
            assert len(row["repeats"]) == repeats
            assert isinstance(row["server_cpu_ms_per_request"], (int, float)), row


def test_primary_rows_carry_baselines_and_ratios(bench_results):
    results, _ = bench_results
    for name, section in results["passes"].items():
        rows = {row["figure"]: row for row in section["primary"]}
        capacity = rows["server CPU ms per event, closed loop (capacity)"]
        assert set(capacity["values"]) == TARGETS, name
        assert capacity["baseline"] == "djust_new" and capacity["ratio"] is not None
        per_size = rows[f"server CPU ms per event, {SESSIONS} sessions x 1 event/s"]
        assert per_size["ratio"] is not None
        page = rows["server CPU ms per page, `/` under wrk"]
        assert set(page["values"]) == {"ours", "bare_django"} and page["ratio"] is not None
        for row in section["primary"]:
            for cell in row["values"].values():
                assert cell["min"] <= cell["median"] <= cell["max"], (name, row["figure"], cell)


def test_pinning_recorded_from_proc(bench_results):
    results, _ = bench_results
    pinning = results["meta"]["pinning"]
    assert (pinning["load_cpu"], pinning["server_cpu"]) == (0, 1)
    assert set(pinning["seen"]) == TARGETS | {"bare_django"}
    ours = pinning["seen"]["ours"]
    # bin/serve's supervisor and the worker uvicorn spawned, Redis and Postgres: all on CPU 1.
    assert len(ours["server"]) >= 2, ours["server"]
    for group in ("server", "redis", "postgres"):
        assert set(ours[group].values()) == {"1"}, (group, ours[group])
    assert set(ours["nginx"].values()) == {"0"}, ours["nginx"]
    assert not [n for n in results["meta"]["notes"] if "not pinned" in n]


def test_memory_startup_and_targets(bench_results):
    results, _ = bench_results
    memory = {(row["target"], row["client_offers_deflate"]): row for row in results["memory"]}
    assert set(memory) == {("ours", True), ("ours", False), ("djust_new", True), ("djust_new", False)}
    assert all(row["negotiated"][0].startswith("permessage-deflate") for (_, d), row in memory.items() if d)
    assert all(row["negotiated"] == ["none"] for (_, d), row in memory.items() if not d)
    assert all(row["failures"] == 0 and row["sessions"] == 5 for row in memory.values())
    startup = [(row["target"], row["workers"]) for row in results["startup"]]
    assert startup == [("ours", 1), ("ours", 2), ("bare_django", 1)]
    assert all(len(row["seconds"]) == 1 and row["median_s"] for row in results["startup"])
    # Every target but the one that needs 500 sessions is judged at this size.
    assert set(results["targets"]) == {
        "cpu_per_event_le_0.6_djust_new",
        "page_req_s_ge_20pct_bare_django",
        "startup_le_2x_bare_uvicorn",
        "rss_per_idle_ws_deflate_le_40kb",
    }
    assert all(isinstance(v["met"], bool) for v in results["targets"].values())


def test_report_renders(bench_results):
    results, out = bench_results
    markdown = (out / "BENCHMARKS.md").read_text()
    assert markdown.startswith("# Benchmarks\n")
    headings = [
        "## Pinned: server CPU per event and per page",
        "## Unpinned: server CPU per event and per page",
        "## Targets",
        "## Details, pinned pass",
        "## Details, unpinned pass",
        "## Memory per idle WebSocket",
        "## Start-up",
        "## Pinning as /proc saw it",
        "## Reproduce",
    ]
    positions = [markdown.index(h) for h in headings]
    assert positions == sorted(positions), "pinned table first, then unpinned, then targets"
    assert "of the `djust new` project's |" in markdown
    assert "of the bare Django view's |" in markdown
    assert "![event round trip against concurrent sessions](latency.png)" in markdown
    assert "| this template | 4 |" in markdown
    assert (out / "latency.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # Rendering again from the JSON alone gives the same report.
    from bench import render

    render.write(results, out / "again.md", out / "latency.png")
    assert (out / "again.md").read_text() == markdown
