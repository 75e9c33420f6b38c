"""bench/hops.py at a tiny size: it keeps working, and its hop counts say what the consumer saves.

Thread hops are counted (calls into asgiref's SyncToAsync), not timed, so they
can be asserted: the demo's click takes four (djust's two permission checks,
its render, the shared total's Redis INCR), one fewer than with channels'
per-message database cleanup, which the generated consumer skips while no
connection is open. Timings are only printed.
"""

import json

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.slow, pytest.mark.xdist_group("default")]


def test_hops_per_event(synced, tmp_path, capsys):
    from bench import hops

    project = synced("default")
    output = tmp_path / "hops.json"
    argv = ["--project", str(project.path), "--events", "60", "--warmup", "10"]
    hops.main([*argv, "--rounds", "1", "--connects", "3", "--output", str(output)])
    print(capsys.readouterr().out)
    results = json.loads(output.read_text())
    assert set(results["events"]) == {name for name, _ in hops.CONFIGS}
    # A server push arriving during the timed events adds a fraction of a hop.
    per_event = {name: round(row["hops_per_event"]) for name, row in results["events"].items()}
    assert per_event["baseline"] == 4, per_event
    assert per_event["channels_cleanup"] == per_event["baseline"] + 1, per_event
    assert per_event["no_permission_hops"] == per_event["baseline"] - 2, per_event
    assert per_event["no_render_hop"] == per_event["baseline"] - 1, per_event
    assert per_event["local_def"] == per_event["local_async"] + 1, per_event
    assert set(results["connects"]) == {"as_generated", "without_hotreload_group"}
    assert results["meta"]["settings"].startswith("config.settings.prod")
