"""Where a page GET of / spends its time, in-process, beside a bare Django view.

    uv run --group test python -m bench.page                       # 300 requests per row
    uv run --group test python -m bench.page --requests 60 --output /tmp/page.json

What runs, all on this machine:
1. Generates the default project (or uses --project), syncs its venv, starts
   Redis and PostgreSQL (tests/stack.py), migrates and collects static files.
2. bench/page_probe.py, with the project's Python under config.settings.prod,
   sends GET / to the ASGI application bin/serve runs, one request at a time,
   with no server or proxy in between: first visits (no cookie: a new session
   each time) and second visits (the cookies of a first visit sent back). Each
   request's time is split by what it spent in the session store, SQL, Redis,
   djust's state backend and renders, CSRF, CSP, the nonce rewrite and the
   metrics; then each setting under question is changed alone (session
   engines, middleware left out) and measured again.
3. The same probe times bench/baselines/bare_django.py (one view, no middleware).
4. Prints the tables and writes the JSON (--output).

Figures are medians over --requests requests in --rounds blocks, with the
spread (10th to 90th percentile, and the median of each block). The blocks of
all variants are taken in turn (block 1 of each, then block 2 of each, ...),
so a burst of other work on the machine hits every variant alike; still,
compare rows of the same run only. "x bare" divides by the bare view's lower
median (it ignores cookies, so its two visits are one floor).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import project as bench_project  # noqa: E402
from bench.machine import machine, versions  # noqa: E402
from bench.procs import log, stop_all, write_json  # noqa: E402
from tests import stack  # noqa: E402

PROBE = REPO / "bench" / "page_probe.py"


def prepare(args, workdir, started):
    project = bench_project.generated(args.project, workdir)
    env, _, _, _ = bench_project.dependencies(project, workdir, started)
    app = stack.AppServer(project, env)
    app.prepare()  # migrate, collectstatic
    return project, app


def probe(project, env, answer, *options):
    """Run bench/page_probe.py with the project's Python; its JSON answer."""
    result = subprocess.run(
        [str(project.path / ".venv" / "bin" / "python"), str(PROBE), "--json", str(answer), *options],
        cwd=project.path,
        env=project.env(**env),
        stdout=subprocess.DEVNULL,  # the application's own log lines
        stderr=None,  # the probe's progress lines go straight to ours
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"page_probe {' '.join(options)} failed (exit {result.returncode})")
    return json.loads(Path(answer).read_text())


def table(results):
    """The two tables as text: totals per variant, then the breakdown of the configured page."""
    variants = results["variants"]
    bare = variants.get("bare Django view", {})
    lines = [
        "GET / in-process, one request at a time (ms; median, p10-p90, block medians; x bare view)",
        "",
        f"| {'variant':26s} | visit  | median | p10-p90       | block medians         | x bare |",
        f"|{'-' * 28}|--------|--------|---------------|-----------------------|--------|",
    ]
    for name, entry in variants.items():
        for visit in ("first", "second"):
            row = entry[visit]
            # The bare view ignores cookies: both its visits are one floor.
            base = bare.get("floor_ms")
            times = f"{row['median_ms'] / base:.1f}" if base else "-"
            blocks = ", ".join(f"{m:.2f}" for m in row["round_medians_ms"])
            spread = f"{row['p10_ms']:.2f}-{row['p90_ms']:.2f}"
            cells = f"{row['median_ms']:6.2f} | {spread:13s} | {blocks:21s} | {times:>6s}"
            lines.append(f"| {name:26s} | {visit:6s} | {cells} |")
    configured = variants.get("as configured")
    if configured:
        lines += [
            "",
            f"Where the configured page's time goes ({configured['session_engine']}); "
            "median ms per request, inclusive, nested rows overlap",
            "",
            f"| {'component':58s} | first  | calls | second | calls |",
            f"|{'-' * 60}|--------|-------|--------|-------|",
        ]
        labels = sorted(set(configured["first"]["parts"]) | set(configured["second"]["parts"]))
        for label in labels:
            cells = []
            for visit in ("first", "second"):
                part = configured[visit]["parts"].get(label, {"median_ms": 0.0, "calls_per_request": 0})
                cells.append(f"{part['median_ms']:6.3f} | {part['calls_per_request']:5.1f}")
            lines.append(f"| {label:58s} | {cells[0]} | {cells[1]} |")
        lines.append(
            f"| {'whole request':58s} | {configured['first']['median_ms']:6.3f} |       "
            f"| {configured['second']['median_ms']:6.3f} |       |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per variant and visit")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="blocks the requests are split into")
    parser.add_argument("--variants", help="comma list (default: all the probe knows)")
    parser.add_argument("--project", help="use this generated project instead of generating one")
    parser.add_argument("--workdir", help="where servers keep their files (default: a new temp dir)")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="djust-page-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cleanup = []

    def started(thing):
        cleanup.append(thing)
        return thing

    try:
        project, app = prepare(args, workdir, started)
        env = {**app.env}
        options = ["--requests", str(args.requests), "--warmup", str(args.warmup)]
        options += ["--rounds", str(args.rounds)]
        if args.variants:
            options += ["--variants", args.variants]
        python = str(project.path / ".venv" / "bin" / "python")
        results = {"meta": {"machine": machine(), "versions": versions(python), "command": sys.argv}}
        log("probing the generated project's GET /")
        results.update(probe(project, env, workdir / "page.json", *options))
        log("probing the bare Django view")
        bare = probe(project, env, workdir / "bare.json", *options, "--bare")
        results["variants"].update(bare["variants"])
        floor = bare["variants"]["bare Django view"]
        results["variants"]["bare Django view"]["floor_ms"] = min(
            floor["first"]["median_ms"], floor["second"]["median_ms"]
        )
    finally:
        stop_all(cleanup)
    print(table(results))
    if args.output:
        write_json(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
