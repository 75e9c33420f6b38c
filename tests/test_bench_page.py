"""The page profile (bench/page.py) end to end at a tiny size, so it keeps working.

Real Redis and PostgreSQL, the default project under config.settings.prod, a
few requests per variant. It asserts on the shape of the results (every
variant and visit measured, the breakdown found what it wraps, a first visit
gets a new session and a second keeps it), never on a timing.
"""

import json

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.slow, pytest.mark.xdist_group("default")]

VARIANTS = ["as configured", "session cached_db", "no nonce rewrite"]


def test_page_profile_runs_and_reports_every_variant(synced, tmp_path, capsys):
    from bench import page

    project = synced("default")
    output = tmp_path / "page.json"
    argv = [
        "--project", str(project.path), "--workdir", str(tmp_path / "run"),
        "--requests", "6", "--rounds", "2", "--warmup", "1",
        "--variants", ",".join(VARIANTS), "--output", str(output),
    ]  # fmt: skip
    assert page.main(argv) == 0
    results = json.loads(output.read_text())
    variants = results["variants"]
    assert list(variants) == [*VARIANTS, "bare Django view"]
    for name, entry in variants.items():
        for visit in ("first", "second"):
            assert entry[visit]["n"] == 6, (name, visit)
            assert len(entry[visit]["round_medians_ms"]) == 2, (name, visit)
    configured = variants["as configured"]
    assert configured["session_engine"] == "django.contrib.sessions.backends.cache"
    assert variants["session cached_db"]["session_engine"].endswith("cached_db")
    # A first visit creates a session each time; a second visit sends its cookie back.
    first, second = configured["first"]["parts"], configured["second"]["parts"]
    creating = "session: create (djust, first visit: first save)"
    assert first[creating]["calls_per_request"] == 1
    assert second.get(creating, {"calls_per_request": 0})["calls_per_request"] == 0
    # cached_db writes the database on every page view; the cache alone never does.
    assert "SQL queries (all)" not in first
    assert variants["session cached_db"]["second"]["parts"]["SQL queries (all)"]["calls_per_request"] >= 1
    for label in ("djust state backend: set (Redis SETEX)", "nonce rewrite of inline <script> tags"):
        assert first[label]["calls_per_request"] == 1, label
    printed = capsys.readouterr().out
    assert "Where the configured page's time goes" in printed
    print(printed)
