"""The service against the baselines (ratios), and the issue's targets met or not."""


def ratios(liveview, capacity):
    """ours / baseline for each size and percentile, and capacity baseline / ours."""
    out = {}
    ours = {r["sessions"]: r for r in liveview.get("ours", {}).get("runs", [])}
    for name in ("echo", "djust_new"):
        rows = []
        for run in liveview.get(name, {}).get("runs", []):
            mine = ours.get(run["sessions"])
            if not mine:
                continue
            row = {"sessions": run["sessions"]}
            for key in ("p50", "p95", "p99"):
                a, b = mine["rtt_ms"].get(key), run["rtt_ms"].get(key)
                row[key] = round(a / b, 2) if a and b else None
            rows.append(row)
        if rows:
            out[f"ours_vs_{name}"] = rows
        if "ours" in capacity and name in capacity and capacity[name]["events_per_s"]:
            out[f"capacity_ours_vs_{name}"] = round(
                capacity["ours"]["events_per_s"] / capacity[name]["events_per_s"], 3
            )
    return out


def judge(results):
    """The issue's three targets, met or not, from the numbers just measured."""
    runs = {r["sessions"]: r for r in results["liveview"].get("ours", {}).get("runs", [])}
    verdicts = {}
    if 500 in runs:
        p99 = runs[500]["rtt_ms"]["p99"]
        verdicts["p99_at_500_le_25ms"] = {
            "value_ms": p99,
            "met": p99 is not None and p99 <= 25 and runs[500]["events_unanswered"] == 0,
        }
    if 1000 in runs:
        run = runs[1000]
        verdicts["all_1000_within_100ms"] = {
            "late": run["events_late_over_100ms"],
            "unanswered": run["events_unanswered"],
            "max_ms": run["rtt_ms"]["max"],
            "met": run["every_event_within_100ms"],
        }
    for mem in results["memory"]:
        if mem["target"] == "ours" and mem["client_offers_deflate"]:
            kb = mem["kb_per_session"]
            verdicts["rss_per_idle_ws_deflate_le_64kb"] = {"value_kb": kb, "met": kb is not None and kb <= 64}
    return verdicts
