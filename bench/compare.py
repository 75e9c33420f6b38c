"""Repeats folded into median and spread, the service against the baselines, the issue's targets."""

import statistics

# --- repeats -----------------------------------------------------------------------


def fold(runs):
    """Several runs of one point as one: every number its median, with `spread` {key: [min, max]}
    for the figures the report shows and `repeats` the runs themselves."""
    if not runs:
        return None
    if len(runs) == 1:
        one = dict(runs[0])
        one["spread"] = {}
        one["repeats"] = runs
        return one
    folded = _median(runs)
    folded["spread"] = {}
    for key in SPREAD_KEYS:
        values = [v for v in (_get(r, key) for r in runs) if isinstance(v, (int, float))]
        if values:
            folded["spread"][key] = [min(values), max(values)]
    folded["repeats"] = runs
    return folded


SPREAD_KEYS = (
    "server_cpu_ms_per_event",
    "server_cpu_ms_per_request",
    "events_per_s",
    "requests_per_s",
    "rtt_ms.p50",
    "rtt_ms.p99",
    "p99_ms",
)


def _get(run, dotted):
    for part in dotted.split("."):
        run = run.get(part) if isinstance(run, dict) else None
    return run


def _median(values):
    first = values[0]
    if isinstance(first, dict):
        return {k: _median([v.get(k) for v in values]) for k in first if k != "raw"}
    if isinstance(first, bool):
        return all(values)
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numbers and len(numbers) == len(values):
        middle = statistics.median(numbers)
        if isinstance(middle, float) and middle.is_integer() and all(isinstance(v, int) for v in numbers):
            return int(middle)  # counts stay counts
        return round(middle, 3) if isinstance(middle, float) else middle
    return first


def figure(point, key):
    """{median, min, max} of one figure of a folded point (min = max = median for one run)."""
    if not point:
        return None
    middle = _get(point, key)
    low, high = point.get("spread", {}).get(key, [middle, middle])
    return {"median": middle, "min": low, "max": high} if middle is not None else None


# --- the primary figures of one pass -------------------------------------------------

LIVE_TARGETS = ("ours", "ours_def", "djust_new", "echo")


def primary(section, sizes):
    """Rows of the primary table: each figure for every target, and ours / the baseline's."""
    rows = []
    capacity = section.get("capacity", {})
    rows.append(_row("server CPU ms per event, closed loop (capacity)", capacity, "server_cpu_ms_per_event"))
    rows.append(_row("events/s, closed loop (capacity)", capacity, "events_per_s"))
    for size in sizes:
        points = {
            name: next((r for r in runs.get("runs", []) if r["sessions"] == size), None)
            for name, runs in section.get("liveview", {}).items()
        }
        rows.append(
            _row(f"server CPU ms per event, {size} sessions x 1 event/s", points, "server_cpu_ms_per_event")
        )
        rows.append(_row(f"p99 event round trip ms, {size} sessions x 1 event/s", points, "rtt_ms.p99"))
    pages = {r["target"]: r for r in section.get("http", []) if r["url_path"] == "/"}
    rows.append(
        _row("server CPU ms per page, `/` under wrk", pages, "server_cpu_ms_per_request", "bare_django")
    )
    rows.append(_row("requests/s, `/` under wrk", pages, "requests_per_s", "bare_django"))
    return [row for row in rows if row["values"]]


def _row(label, points, key, baseline="djust_new"):
    values = {name: figure(point, key) for name, point in points.items() if figure(point, key)}
    ours, base = values.get("ours"), values.get(baseline)
    ratio = round(ours["median"] / base["median"], 3) if ours and base and base["median"] else None
    return {"figure": label, "key": key, "values": values, "baseline": baseline, "ratio": ratio}


# --- targets ---------------------------------------------------------------------------


def judge(results):
    """The issue's five targets, met or not, from the pinned pass (the first pass run)."""
    section = results["passes"][results["meta"]["primary_pass"]]
    verdicts = {}
    capacity = section.get("capacity", {})
    ours, new = (
        figure(capacity.get("ours"), "server_cpu_ms_per_event"),
        figure(capacity.get("djust_new"), "server_cpu_ms_per_event"),
    )
    if ours and new and new["median"]:
        ratio = round(ours["median"] / new["median"], 3)
        verdicts["cpu_per_event_le_0.6_djust_new"] = {
            "ours_ms": ours["median"],
            "djust_new_ms": new["median"],
            "ratio": ratio,
            "met": ratio <= 0.6,
        }
    pages = {r["target"]: r for r in section.get("http", []) if r["url_path"] == "/"}
    if "ours" in pages and "bare_django" in pages and pages["bare_django"]["requests_per_s"]:
        share = pages["ours"]["requests_per_s"] / pages["bare_django"]["requests_per_s"]
        verdicts["page_req_s_ge_20pct_bare_django"] = {
            "ours_req_s": pages["ours"]["requests_per_s"],
            "bare_req_s": pages["bare_django"]["requests_per_s"],
            "share_pct": round(100 * share, 1),
            "met": share >= 0.2,
        }
    startup = {(s["target"], s["workers"]): s for s in results.get("startup", [])}
    mine, bare = startup.get(("ours", 1)), startup.get(("bare_django", 1))
    if mine and bare and mine["median_s"] and bare["median_s"]:
        ratio = round(mine["median_s"] / bare["median_s"], 2)
        verdicts["startup_le_2x_bare_uvicorn"] = {
            "ours_s": mine["median_s"],
            "bare_s": bare["median_s"],
            "ratio": ratio,
            "met": ratio <= 2,
        }
    runs = {r["sessions"]: r for r in section.get("liveview", {}).get("ours", {}).get("runs", [])}
    if 500 in runs:
        p99 = runs[500]["rtt_ms"]["p99"]
        verdicts["p99_at_500_le_25ms"] = {
            "value_ms": p99,
            "unanswered": runs[500]["events_unanswered"],
            "met": p99 is not None and p99 <= 25 and runs[500]["events_unanswered"] == 0,
        }
    for mem in results.get("memory", []):
        if mem["target"] == "ours" and mem["client_offers_deflate"]:
            kb = mem["kb_per_session"]
            verdicts["rss_per_idle_ws_deflate_le_40kb"] = {"value_kb": kb, "met": kb is not None and kb <= 40}
    return verdicts
