"""Render bench/results.json into BENCHMARKS.md (tables) and a PNG plot of latency against concurrency.

python -m bench.render [results.json] [BENCHMARKS.md] [latency.png]
"""

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent

NAMES = {
    "ours": "this template",
    "ours_def": "this template, `def` handler",
    "djust_new": "`djust new` project",
    "echo": "bare WebSocket echo",
    "bare_django": "bare Django view",
}
COLUMNS = ("ours", "ours_def", "djust_new", "echo", "bare_django")


def fmt(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    return str(value)


def num(value):
    """Three significant figures at most, for figures that span 0.1 to 10,000."""
    if value is None:
        return "–"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def spread(cell):
    """'median (min-max)' (an en dash in the output), or the median alone for one run."""
    if not cell:
        return "–"
    if cell["min"] == cell["max"]:
        return num(cell["median"])
    return f"{num(cell['median'])} ({num(cell['min'])}–{num(cell['max'])})"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def primary_table(section):
    rows = section.get("primary", [])
    present = [name for name in COLUMNS if any(name in row["values"] for row in rows)]
    header = ["figure", *(NAMES[n] for n in present), "this template / baseline"]
    body = []
    for row in rows:
        ratio = "–"
        if row["ratio"] is not None:
            ratio = f"{row['ratio']:.2f} of the {NAMES[row['baseline']]}'s"
        body.append([row["figure"], *(spread(row["values"].get(n)) for n in present), ratio])
    return table(header, body)


def pass_heading(meta, name, section):
    repeats = section.get("repeats", 1)
    runs = f"median (min–max) of {repeats} runs" if repeats > 1 else "one run of each point"
    if name == "pinned":
        how = (
            f"k6, wrk and every Nginx pinned to CPU {meta['pinning']['load_cpu']}; the server under test, "
            f"Redis and Postgres to CPU {meta['pinning']['server_cpu']} (`taskset`)"
        )
    else:
        how = "nothing pinned: the load tools, Nginx and the servers share both cores as the scheduler likes"
    return f"## {name.capitalize()}: server CPU per event and per page\n\n{how}; {runs}."


INTRO = """\
Measured by `bench/run.py` on one machine, all on 127.0.0.1. The primary figures are the server's
CPU per LiveView event and per page (CPU seconds of the server's processes from /proc, divided by
events answered or requests served), each beside baselines measured in the same run: they move
less with the machine than latency and throughput do. The first table comes from a pinned pass
(the load tools on one core, the server and its Redis/Postgres on the other), so the load tool
cannot steal the server's core; the second pass runs the same points unpinned, as the published
figures before issue 14 were taken. Numbers from another machine will differ; the ratios travel
better. Regenerate with the command in [Reproduce](#reproduce).

The rows:
- **this template**: the generated project's `bin/serve` under config.settings.prod, Redis
  channel layer and state, Postgres, behind the generated Nginx site. Its demo handler is
  `async def increment`, as generated.
- **this template, `def` handler**: a copy of the same project made at bench time whose
  `increment` is a plain `def` (calling the shared-total code through `async_to_sync`), so the
  handler style's effect is its own row.
- **`djust new` project**: what `python -m djust new demo` writes with djust 1.2.6 (checked by
  running that scaffold from the generated project's .venv; bench/baselines/djust_new/demo/settings.py
  lists the few differences): djust.theming installed, in-memory channel layer, memory state,
  SQLite, one uvicorn process as its `make dev` runs it (without `--reload`), its handlers plain
  `def`. The page is the template's counter, without the Redis shared total.
- **bare WebSocket echo** (bench/baselines/echo_app.py): answers each event with a frame of the
  patch's size; the ceiling for the transport. **bare Django view** (bench/baselines/bare_django.py):
  one view, no middleware; the floor for a page.
"""


def header(results):
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    workers = meta.get("workers")
    out = ["# Benchmarks", "", INTRO]
    out += [
        f"- Run: {meta.get('started_utc', '?')} to {meta.get('finished_utc', '?')} (UTC), "
        f"{fmt((meta.get('duration_s') or 0) / 60)} minutes,",
        f"  `{meta.get('command', '')}`",
        f"- Machine: {machine.get('cpus')} CPUs ({machine.get('cpu_model', '')}), "
        f"{machine.get('mem_gb')} GB, Linux {machine.get('kernel', '')}; a fixed pure-Python loop "
        f"took {machine.get('python_loop_ms', '–')} ms (lower is a faster core); load average "
        f"{', '.join(fmt(x, 2) for x in meta.get('loadavg_at_start', []))} at the start",
        "- Software: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- bin/serve, the echo and the bare Django view ran with {workers} worker(s) in both passes. "
        + WORKERS_WHY,
    ]
    frames = meta.get("frames")
    if frames:
        out.append(
            f"- Frames: the counter's mount HTML is {frames['mount_html_chars']} characters, a patch frame "
            f"{frames['patch_frame_chars']}; the echo baseline sends the same sizes."
        )
    for note in meta.get("notes", []):
        out.append(f"- {note}")
    return out


# Why one worker on one core: measured with this benchmark on 2026-11-24 (shared machine),
# `--only ours --sizes 500 --events 10 --repeats 2 --unpinned-repeats 0 --workers 1` and `--workers 2`.
WORKERS_WHY = (
    "Why one: with one core for the service, 2 workers took turns on it and did worse. Measured "
    "pinned on 2026-11-24 (two runs each, machine shared): closed-loop capacity 559 (496–622) "
    "events/s at 1.50 (1.47–1.54) ms CPU/event with 1 worker against 471 (465–478) at 2.15 "
    "(2.08–2.23) with 2; at 500 sessions x 1 event/s, 1 worker answered 5,000 and 4,911 of 5,000 "
    "events (p99 4.5 and 5.9 s), 2 workers 972 of 4,476 and 3,401 of 5,000 (p99 12.9 and 9.4 s)."
)

TARGET_LABELS = {
    "cpu_per_event_le_0.6_djust_new": "server CPU per event (capacity) <= 0.6 x the `djust new` project's",
    "page_req_s_ge_20pct_bare_django": "`/` >= 20% of the bare Django view's requests/s",
    "startup_le_2x_bare_uvicorn": "start-up to first 200 (1 worker) <= 2 x a bare Django app on uvicorn",
    "p99_at_500_le_25ms": "p99 event round trip <= 25 ms at 500 sessions x 1 event/s",
    "rss_per_idle_ws_deflate_le_40kb": "<= 40 KB RSS per idle WebSocket, permessage-deflate",
}


def targets_section(results):
    verdicts = results.get("targets", {})
    meta = results.get("meta", {})
    out = ["", "## Targets", "", f"Judged from the {meta.get('primary_pass', 'pinned')} pass of this run."]
    rows = []
    for key, verdict in verdicts.items():
        measured = {k: v for k, v in verdict.items() if k != "met"}
        rows.append(
            [
                TARGET_LABELS.get(key, key),
                ", ".join(f"{k} {fmt(v, 3)}" for k, v in measured.items()),
                "met" if verdict["met"] else "**missed**",
            ]
        )
    missing = [label for key, label in TARGET_LABELS.items() if key not in verdicts]
    rows += [[label, "not measured in this run", "–"] for label in missing]
    out += ["", table(["target", "measured", "result"], rows)]
    return out


def liveview_rows(section):
    rows = []
    for name in ("ours", "ours_def", "djust_new", "echo"):
        for run in section.get("liveview", {}).get(name, {}).get("runs", []):
            rtt = run["rtt_ms"]
            rows.append(
                [
                    NAMES[name],
                    run["sessions"],
                    rtt["p50"],
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


def details(results, name, plot_name):
    section = results["passes"][name]
    meta = results.get("meta", {})
    out = [
        "",
        f"## Details, {name} pass",
        "",
        "LiveView events through Nginx: each session connects (TLS), mounts the counter, then sends "
        f"1 event/s for {meta.get('events_per_session')} s on a fixed schedule, random phase (open loop). "
        "Round trip:",
        "from sending an event to the frame carrying its `ref`, in ms (k6's clock has 1 ms resolution).",
        "`late`: answers over 100 ms; `errors` counts failed sessions, error frames, socket errors and",
        "unanswered events. Medians of the runs; CPU columns are seconds used during a run.",
    ]
    if name == meta.get("primary_pass"):
        out += ["", f"![event round trip against concurrent sessions]({plot_name})"]
    out += [
        "",
        table(
            ["target", "sessions", "p50", "p99", "max", "events/s", "answered", "late", "errors",
             "all patched", "server ms CPU/event", "server CPU s", "nginx CPU s", "k6 CPU s"],
            liveview_rows(section),
        ),
    ]  # fmt: skip
    capacity = section.get("capacity", {})
    if capacity:
        out += [
            "",
            "Capacity (closed loop): sessions send their next event as soon as the previous patch arrives.",
            "",
        ]
        rows = [
            [NAMES[n], c["sessions"], c["events_per_s"], c["rtt_ms"]["p50"], c["rtt_ms"]["p99"],
             c["server_cpu_ms_per_event"], c["cpu_s"]["server"], c["cpu_s"]["k6"], c["errors"]]
            for n, c in capacity.items()
        ]  # fmt: skip
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
    http_rows = section.get("http", [])
    if http_rows:
        out += [
            "",
            "HTTP through Nginx (wrk): `/health/live/` is answered by the template's first middleware; `/`",
            "renders the LiveView page (session, CSRF, CSP nonce, djust's render). The bare Django view has",
            "no middleware, served by uvicorn behind the same kind of Nginx.",
            "",
        ]
        rows = [
            [NAMES.get(r["target"], r["target"]), f"`{r['url_path']}`", r["connections"], r["requests_per_s"],
             r.get("p50_ms"), r.get("p99_ms"), r.get("server_cpu_ms_per_request"), r["non_2xx_3xx"],
             r["socket_errors"]]
            for r in http_rows
        ]  # fmt: skip
        out.append(
            table(
                [
                    "server",
                    "path",
                    "connections",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "server ms CPU/request",
                    "non-2xx/3xx",
                    "socket errors",
                ],
                rows,
            )
        )
    return out


def memory_section(results):
    memory = results.get("memory", [])
    if not memory:
        return []
    out = [
        "",
        "## Memory per idle WebSocket",
        "",
        "Sum of the workers' resident memory (VmRSS from /proc) before and after opening N more mounted,",
        "idle sessions straight to the server's port, divided by N, on a freshly started server. At least",
        "200 warm-up sessions come first, so one-time costs stay out. The client offers",
        "`permessage-deflate; client_max_window_bits` as browsers do, or no compression.",
        "",
    ]
    rows = [
        [NAMES.get(m["target"], m["target"]), "offered" if m["client_offers_deflate"] else "not offered",
         "; ".join(m["negotiated"]), m["sessions"], m["failures"], m["workers"], m["kb_per_session"],
         m.get("redis_bytes_per_session")]
        for m in memory
    ]  # fmt: skip
    out.append(
        table(
            [
                "server",
                "deflate",
                "negotiated",
                "sessions",
                "failures",
                "workers",
                "KB per session",
                "Redis bytes per session",
            ],
            rows,
        )
    )
    return out


def startup_section(results):
    startup = results.get("startup", [])
    if not startup:
        return []
    out = [
        "",
        "## Start-up",
        "",
        "Seconds from exec to the first 200 from `/health/live/` (polled every 10 ms), pinned like the",
        "server when the run is pinned: `bin/serve`, and a bare Django app on uvicorn (one worker,",
        "bench/baselines/bare_django.py) for scale. Both run from the generated project's venv,",
        "byte-compiled first as the Dockerfile and the runbook install it.",
        "",
    ]
    bare = next((s for s in startup if s["target"] == "bare_django"), None)
    rows = []
    for s in startup:
        ratio = s["median_s"] / bare["median_s"] if bare and bare["median_s"] and s["median_s"] else None
        rows.append(
            [NAMES.get(s["target"], s["target"]), s["workers"], ", ".join(fmt(x, 3) for x in s["seconds"]),
             fmt(s["median_s"], 3), fmt(ratio, 2) if ratio else "–"]
        )  # fmt: skip
    out.append(table(["server", "workers", "runs (s)", "median (s)", "x bare Django"], rows))
    return out


def pinning_section(results):
    pinning = results.get("meta", {}).get("pinning")
    if not pinning or not pinning.get("seen"):
        return []
    out = [
        "",
        "## Pinning as /proc saw it",
        "",
        "`Cpus_allowed_list` of every process of each target (uvicorn's spawned workers, Nginx's workers,",
        "Redis' and Postgres' processes included), read while the pinned pass ran.",
        "",
    ]
    rows = []
    for target, groups in pinning["seen"].items():
        for group, procs in groups.items():
            cpus = sorted(set(procs.values()), key=str)
            rows.append([NAMES.get(target, target), group, len(procs), ", ".join(str(c) for c in cpus)])
    out.append(table(["target", "processes", "count", "Cpus_allowed_list"], rows))
    return out


def profile_section(results):
    profile = results.get("profile")
    if not profile or not profile.get("samples"):
        return []
    load = profile.get("load", {})
    out = [
        "",
        "## Where a worker's time goes (py-spy)",
        "",
        f"{profile['samples']} samples of one worker while {load.get('sessions')} sessions ran closed loop "
        f"({load.get('events_per_s')} events/s). Self time by package:",
        "",
        table(["package", "% self"], [[k, v] for k, v in profile["self_by_package_pct"].items()][:12]),
    ]
    return out


def included(name):
    path = HERE / name
    return ["", path.read_text().strip()] if path.exists() else []


REPRODUCE = """\

## Reproduce

```sh
# Debian 12; taskset (pinning) is util-linux
sudo apt-get install -y nginx redis-server wrk postgresql util-linux
uv run --group test python -m bench.run        # pinned + unpinned, ~40 minutes on 2 cores
uv run --group test python -m bench.run --sizes 10 --events 3 --memory-sessions 20   # a quick look
```

It writes `bench/results.json`, this file and `bench/latency.png`, and prints its estimated
duration at the start. `--no-pin` runs one unpinned pass; `--repeats`, `--unpinned-repeats`,
`--sizes 100,500,1000` and `--workers` change what is measured; `--help` lists the rest
(`--server-env KEY=VALUE` tries a server setting). Nothing leaves 127.0.0.1.
"""


def markdown(results, plot_name):
    meta = results.get("meta", {})
    out = header(results)
    passes = list(results.get("passes", {}))
    for name in passes:
        section = results["passes"][name]
        out += ["", pass_heading(meta, name, section), "", primary_table(section)]
    out += targets_section(results)
    for name in passes:
        out += details(results, name, plot_name)
    out += memory_section(results) + startup_section(results) + pinning_section(results)
    out += profile_section(results)
    out += included("analysis.md") + included("djust-costs.md")
    out.append(REPRODUCE)
    return "\n".join(out)


def summary(results):
    """The primary figures and targets as plain lines, for the end of a run."""
    lines = []
    for name, section in results.get("passes", {}).items():
        lines.append(f"--- {name} ({section.get('repeats')} run(s) of each point): median (min-max)")
        for row in section.get("primary", []):
            cells = "; ".join(f"{n} {spread(row['values'][n])}" for n in COLUMNS if n in row["values"])
            ratio = f"  => {row['ratio']:.2f} of {row['baseline']}" if row["ratio"] is not None else ""
            lines.append(f"{row['figure']}: {cells}{ratio}")
    for s in results.get("startup", []):
        lines.append(f"start-up {s['target']} {s['workers']} worker(s): {s['seconds']} s")
    for m in results.get("memory", []):
        lines.append(
            f"memory {m['target']} deflate={m['client_offers_deflate']}: {m['kb_per_session']} KB/session"
        )
    for key, verdict in results.get("targets", {}).items():
        lines.append(f"target {key}: {'MET' if verdict['met'] else 'MISSED'} {verdict}")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {
        "ours": ("tab:blue", "o"),
        "ours_def": ("tab:purple", "D"),
        "djust_new": ("tab:orange", "s"),
        "echo": ("tab:green", "^"),
    }
    for name, (colour, marker) in styles.items():
        section = results["passes"][results["meta"]["primary_pass"]]
        runs = section.get("liveview", {}).get(name, {}).get("runs", [])
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
