"""Render bench/results.json into BENCHMARKS.md (tables) and a PNG plot of latency against concurrency.

python -m bench.render [results.json] [BENCHMARKS.md] [latency.png]
"""

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

NAMES = {
    "ours": "this template",
    "djust_new": "`djust new` shape",
    "echo": "bare WebSocket echo",
    "bare_django": "bare Django view",
}


def fmt(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    return str(value)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def liveview_rows(results):
    rows = []
    for name in ("ours", "djust_new", "echo"):
        for run in results.get("liveview", {}).get(name, {}).get("runs", []):
            rtt = run["rtt_ms"]
            rows.append(
                [
                    NAMES[name],
                    run["sessions"],
                    rtt["p50"],
                    rtt["p95"],
                    rtt["p99"],
                    rtt["max"],
                    run["events_per_s"],
                    f"{run['events_answered']}/{run['events_sent']}",
                    run["events_late_over_100ms"],
                    run["errors"],
                    run["every_event_patched"],
                    run["server_cpu_ms_per_event"],
                    run["cpu_s"]["server"],
                    run["cpu_s"]["nginx"],
                    run["cpu_s"]["k6"],
                ]
            )
    return rows


def markdown(results, plot_name):
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    out = [
        "# Benchmarks",
        "",
        "Measured by `bench/run.py` on one machine, all on 127.0.0.1: the load tool (k6, wrk), Nginx, Redis,",
        "Postgres and the servers share its cores, and the CPU each used is shown next to the numbers.",
        "Numbers from another machine will differ; the ratios to the baselines travel better.",
        "Regenerate with the command in [Reproduce](#reproduce).",
        "",
        f"- Run: {meta.get('started_utc', '?')} to {meta.get('finished_utc', '?')} (UTC),",
        f"  `{meta.get('command', '')}`",
        f"- Machine: {machine.get('cpus')} CPUs ({machine.get('cpu_model', '')}), "
        f"{machine.get('mem_gb')} GB, Linux {machine.get('kernel', '')}; a fixed pure-Python loop "
        f"took {machine.get('python_loop_ms', '–')} ms (lower is a faster core)",
        "- Software: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]
    frames = meta.get("frames")
    if frames:
        out.append(
            f"- Frames: the counter's mount HTML is {frames['mount_html_chars']} characters, a patch frame "
            f"{frames['patch_frame_chars']}; the echo baseline sends the same sizes."
        )
    for note in meta.get("notes", []):
        out.append(f"- {note}")

    verdicts = results.get("targets", {})
    if verdicts:
        out += ["", "## Targets", ""]
        labels = {
            "p99_at_500_le_25ms": "p99 event round trip <= 25 ms at 500 sessions x 1 event/s",
            "all_1000_within_100ms": "1,000 sessions x 1 event/s, every event answered within 100 ms",
            "rss_per_idle_ws_deflate_le_64kb": "<= 64 KB RSS per idle WebSocket, permessage-deflate",
        }
        rows = []
        for key, verdict in verdicts.items():
            measured = {k: v for k, v in verdict.items() if k != "met"}
            rows.append(
                [
                    labels.get(key, key),
                    ", ".join(f"{k} {fmt(v)}" for k, v in measured.items()),
                    "met" if verdict["met"] else "**missed**",
                ]
            )
        out.append(table(["target", "measured", "result"], rows))

    out += [
        "",
        "## LiveView events through Nginx",
        "",
        f"Each session connects (TLS through Nginx), mounts the counter, then sends 1 event/s for "
        f"{meta.get('events_per_session')} s on a fixed schedule, random phase (open loop: late answers",
        "do not slow the senders). Round trip: from sending an event to the frame carrying its `ref`, in ms",
        "(k6's clock has 1 ms resolution). `late`: answers over 100 ms; `errors` counts failed sessions,",
        "error frames, socket errors and unanswered events. CPU columns are seconds used during the run.",
        "",
        f"![event round trip against concurrent sessions]({plot_name})",
        "",
        table(
            [
                "target",
                "sessions",
                "p50",
                "p95",
                "p99",
                "max",
                "events/s",
                "answered",
                "late",
                "errors",
                "all patched",
                "server ms CPU/event",
                "server CPU s",
                "nginx CPU s",
                "k6 CPU s",
            ],
            liveview_rows(results),
        ),
    ]

    ratios = results.get("ratios", {})
    ratio_rows = []
    for name in ("echo", "djust_new"):
        for row in ratios.get(f"ours_vs_{name}", []):
            ratio_rows.append([NAMES[name], row["sessions"], row["p50"], row["p95"], row["p99"]])
    if ratio_rows:
        out += ["", "Latency ratio, this template / baseline (1.0 = as fast; higher = slower):", ""]
        out.append(table(["baseline", "sessions", "p50", "p95", "p99"], ratio_rows))

    capacity = results.get("capacity", {})
    if capacity:
        out += [
            "",
            "## Capacity (closed loop)",
            "",
            "Sessions send their next event as soon as the previous patch arrives, for a fixed time: the",
            "most events per second each server answers on this machine with the load tool beside it.",
            "",
        ]
        rows = []
        for name in ("ours", "djust_new", "echo"):
            cap = capacity.get(name)
            if cap:
                rows.append(
                    [
                        NAMES[name],
                        cap["sessions"],
                        cap["events_per_s"],
                        cap["rtt_ms"]["p50"],
                        cap["rtt_ms"]["p99"],
                        cap["server_cpu_ms_per_event"],
                        cap["cpu_s"]["server"],
                        cap["cpu_s"]["k6"],
                        cap["errors"],
                    ]
                )
        out.append(
            table(
                [
                    "target",
                    "sessions",
                    "events/s",
                    "p50",
                    "p99",
                    "server ms CPU/event",
                    "server CPU s",
                    "k6 CPU s",
                    "errors",
                ],
                rows,
            )
        )
        cap_ratios = [(n, ratios.get(f"capacity_ours_vs_{n}")) for n in ("echo", "djust_new")]
        cap_ratios = [f"{fmt(v, 3)} of the {NAMES[n]}'s" for n, v in cap_ratios if v]
        if cap_ratios:
            out += ["", "This template answers " + " and ".join(cap_ratios) + " events per second."]

    http_rows = results.get("http", [])
    if http_rows:
        out += [
            "",
            "## HTTP through Nginx (wrk)",
            "",
            "`/health/live/` is answered by the template's first middleware; `/` renders the LiveView page",
            "(session, CSRF, CSP nonce, djust's render). The bare Django view has no middleware, served",
            "by uvicorn with 2 workers behind the same Nginx.",
            "",
        ]
        rows = [
            [
                NAMES.get(r["target"], r["target"]),
                f"`{r['url_path']}`",
                r["connections"],
                r["requests_per_s"],
                r.get("p50_ms"),
                r.get("p90_ms"),
                r.get("p99_ms"),
                r["non_2xx_3xx"],
                r["socket_errors"],
            ]
            for r in http_rows
        ]
        out.append(
            table(
                [
                    "server",
                    "path",
                    "connections",
                    "req/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "non-2xx/3xx",
                    "socket errors",
                ],
                rows,
            )
        )

    memory = results.get("memory", [])
    if memory:
        out += [
            "",
            "## Memory per idle WebSocket",
            "",
            "Sum of the workers' resident memory (VmRSS from /proc) before and after opening N more mounted,",
            "idle sessions straight to the server's port, divided by N. At least 200 warm-up sessions come",
            "first, until every worker has served some, so one-time costs (first mount, thread arenas) stay",
            "out. The client offers `permessage-deflate; client_max_window_bits` as browsers do, or no",
            "compression. For this template, Redis' `used_memory` changes by the bytes shown per session",
            "as well (it moves on its own too: expiring keys, the allocator).",
            "",
        ]
        rows = [
            [
                NAMES.get(m["target"], m["target"]),
                "offered" if m["client_offers_deflate"] else "not offered",
                "; ".join(m["negotiated"]),
                m["sessions"],
                m["failures"],
                m["rss_before_kb"] // 1024,
                m["rss_after_kb"] // 1024,
                m["kb_per_session"],
                m.get("redis_bytes_per_session"),
            ]
            for m in memory
        ]
        out.append(
            table(
                [
                    "server",
                    "deflate",
                    "negotiated",
                    "sessions",
                    "failures",
                    "RSS before MB",
                    "RSS after MB",
                    "KB per session",
                    "Redis bytes per session",
                ],
                rows,
            )
        )

    startup = results.get("startup", [])
    if startup:
        out += [
            "",
            "## Start-up",
            "",
            "Seconds from exec of `bin/serve` to the first 200 from `/health/live/` (polled every 10 ms).",
            "",
        ]
        out.append(
            table(
                ["workers", "runs (s)", "median (s)"],
                [[s["workers"], ", ".join(str(x) for x in s["seconds"]), s["median_s"]] for s in startup],
            )
        )

    profile = results.get("profile")
    if profile and profile.get("samples"):
        load = profile.get("load", {})
        out += [
            "",
            "## Where a worker's time goes (py-spy)",
            "",
            f"{profile['samples']} samples of one worker while {load.get('sessions')} sessions ran "
            f"closed loop ({load.get('events_per_s')} events/s in all). Self time by package, then the",
            "busiest functions with everything they call (inclusive), without the plumbing above them.",
            "",
        ]
        out.append(
            table(["package", "% self"], [[k, v] for k, v in profile["self_by_package_pct"].items()][:12])
        )
        wanted = ("djust/", "asgiref/", "channels/db.py", "config/", "core/", "json/")
        rows = [
            [f"`{name}`", pct]
            for name, pct in profile.get("inclusive_top_pct", [])
            if any(w in name for w in wanted)
        ][:20]
        if rows:
            out += ["", table(["function", "% inclusive"], rows)]

    analysis = Path(__file__).with_name("analysis.md")
    if analysis.exists():
        out += ["", analysis.read_text().strip()]

    out += [
        "",
        "## Reproduce",
        "",
        "```sh",
        "sudo apt-get install -y nginx redis-server wrk postgresql   # Debian 12",
        "uv run --group test python -m bench.run                     # ~15 minutes on 2 cores",
        "uv run --group test python -m bench.run --sizes 10 --events 3 --memory-sessions 20   # a quick look",
        "```",
        "",
        "It writes `bench/results.json`, this file and `bench/latency.png`. `--help` lists the knobs",
        "(`--server-env KEY=VALUE` tries a server setting). Nothing leaves 127.0.0.1.",
        "",
    ]
    return "\n".join(out)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"ours": ("tab:blue", "o"), "djust_new": ("tab:orange", "s"), "echo": ("tab:green", "^")}
    for name, (colour, marker) in styles.items():
        runs = results.get("liveview", {}).get(name, {}).get("runs", [])
        if not runs:
            continue
        sizes = [r["sessions"] for r in runs]
        for axis, key in zip(axes, ("p50", "p99"), strict=True):
            values = [r["rtt_ms"][key] if r["rtt_ms"][key] is not None else float("nan") for r in runs]
            axis.plot(sizes, values, color=colour, marker=marker, label=NAMES[name].replace("`", ""))
    for axis, key in zip(axes, ("p50", "p99"), strict=True):
        axis.set_title(f"{key} event round trip, 1 event/s per session")
        axis.set_xlabel("concurrent LiveView sessions (through Nginx)")
        axis.set_ylabel("ms")
        axis.set_yscale("symlog", linthresh=1)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    axes[1].axhline(25, color="grey", linestyle="--", linewidth=0.8)
    axes[1].axhline(100, color="grey", linestyle=":", linewidth=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results, markdown_path, plot_path):
    markdown_path, plot_path = Path(markdown_path), Path(plot_path)
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    plot(results, plot_path)
    relative = os.path.relpath(plot_path, markdown_path.parent)
    markdown_path.write_text(markdown(results, relative) + "\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    source = Path(argv[0]) if argv else REPO / "bench" / "results.json"
    md = Path(argv[1]) if len(argv) > 1 else REPO / "BENCHMARKS.md"
    png = Path(argv[2]) if len(argv) > 2 else REPO / "bench" / "latency.png"
    write(json.loads(source.read_text()), md, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
