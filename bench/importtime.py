"""Where a worker's start goes, and how long bin/serve takes to serve, beside a bare Django start.

    uv run --group test python -m bench.importtime                 # 5 repeats
    uv run --group test python -m bench.importtime --repeats 3 --output /tmp/startup.json

What runs, all on 127.0.0.1, in the default generated project's own venv
(generated and synced as bench.run does, or --project), with a real Redis and
PostgreSQL (tests/stack.py):
The project's venv is byte-compiled first, as production installs it
(--from-source measures an install without bytecode: every module compiled
at every start, about twice as slow).
1. `python -X importtime -c "import config.asgi"`: the slowest modules by
   cumulative import time, and self time summed by top-level package.
2. bench/startup_probe.py, in-process: settings, django.setup() (djust's ready()
   alone), the rest of config.asgi, then the first and the second GET / and
   LiveView mount through the ASGI app, with the modules each first one imports.
3. bin/serve with one worker, --repeats times: seconds from exec to the first
   200 from /health/live/, to the first 200 from /health/ (readiness), to the
   first rendered / and to a mounted LiveView; then how long the second / and
   mount take. Beside it, in the same run, uvicorn serving
   bench/baselines/bare_django.py with one worker: to its first 200.
Median and spread (min-max) of each. The machine's other load moves these
figures: compare rows of one run, not runs.
"""

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import project as bench_project  # noqa: E402
from bench.machine import machine  # noqa: E402
from bench.procs import http_status, launched, log, stop_all, write_json  # noqa: E402
from bench.targets import baseline_env  # noqa: E402
from tests import stack  # noqa: E402

PROBE = REPO / "bench" / "startup_probe.py"
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


# --- 1. python -X importtime ---------------------------------------------------


def importtime(python, cwd, env, top=25):
    """Parse -X importtime of `import config.asgi`: top modules (cumulative) and packages (self)."""
    result = subprocess.run(
        [python, "-X", "importtime", "-c", "import config.asgi"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    modules, packages = [], {}
    for line in result.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if not match:
            continue
        own, cumulative, indent, name = int(match[1]), int(match[2]), len(match[3]), match[4]
        modules.append(
            {"module": name, "cumulative_ms": cumulative / 1000, "self_ms": own / 1000, "depth": indent // 2}
        )
        package = name.split(".")[0]
        packages[package] = packages.get(package, 0) + own / 1000
    total = sum(packages.values())
    return {
        "total_ms": round(total, 1),
        "modules": sorted(modules, key=lambda m: -m["cumulative_ms"])[:top],
        "packages": [
            {"package": name, "self_ms": round(ms, 1), "share": round(ms / total, 3)}
            for name, ms in sorted(packages.items(), key=lambda item: -item[1])[:top]
        ],
    }


# --- 3. bin/serve and the bare Django start -----------------------------------


def poll(port, path, process, host, bound_s=60, want=200):
    """Poll GET path every 10 ms until it answers `want`; seconds polled and the statuses seen."""
    seen = []
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        status = http_status(port, path, host=host, timeout=2)
        if status is not None and (not seen or seen[-1] != status):
            seen.append(status)
        if status == want:
            return seen
        if process.poll() is not None:
            raise RuntimeError(f"the server exited {process.returncode} during start-up")
        time.sleep(0.01)
    raise TimeoutError(f"{path} did not answer {want} within {bound_s} s (saw {seen})")


def timed_get(port, path, host):
    """GET path as the proxy forwards it (HTTPS): its status and milliseconds."""
    start = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers={"Host": host, "X-Forwarded-Proto": "https"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, round((time.monotonic() - start) * 1000, 1)


async def timed_mount(port, domain):
    start = time.monotonic()
    session = stack.LiveSession(f"ws://127.0.0.1:{port}/ws/live/", f"https://{domain}")
    await session.open(timeout=30)
    await session.close()
    return round((time.monotonic() - start) * 1000, 1)


def serve_once(project, env, domain, workdir):
    """One start of bin/serve with one worker: the seconds to each milestone."""
    port = stack.free_port()
    run_env = project.env(**{**env, "PORT": str(port), "WEB_CONCURRENCY": "1"})
    python = str(project.path / ".venv" / "bin" / "python")
    figures = {}
    with launched([python, "bin/serve"], project.path, run_env, workdir / "serve.log") as process:
        zero = time.monotonic()
        poll(port, "/health/live/", process, domain)
        figures["first 200 (/health/live/)"] = time.monotonic() - zero
        figures["/health/ answers before 200"] = poll(port, "/health/", process, domain)[:-1]
        figures["ready (/health/ 200)"] = time.monotonic() - zero
        status, figures["first / (ms)"] = timed_get(port, "/", domain)
        if status != 200:
            raise RuntimeError(f"GET / answered {status}")
        figures["first rendered /"] = time.monotonic() - zero
        figures["first mount (ms)"] = asyncio.run(timed_mount(port, domain))
        figures["first mounted LiveView"] = time.monotonic() - zero
        figures["second / (ms)"] = timed_get(port, "/", domain)[1]
        figures["second mount (ms)"] = asyncio.run(timed_mount(port, domain))
    return figures


def bare_once(python, workdir, extra_env):
    """One start of uvicorn serving bench/baselines/bare_django.py with one worker."""
    port = stack.free_port()
    env = baseline_env(**extra_env)
    argv = [python, "-m", "uvicorn", "bench.baselines.bare_django:application", "--port", str(port),
            "--workers", "1", "--log-level", "warning", "--no-access-log"]  # fmt: skip
    with launched(argv, REPO, env, workdir / "bare.log") as process:
        zero = time.monotonic()
        poll(port, "/health/live/", process, "localhost")
        figures = {"first 200 (/health/live/)": time.monotonic() - zero}
        _, figures["first / (ms)"] = timed_get(port, "/", "localhost")
        figures["first rendered /"] = time.monotonic() - zero
    return figures


def summarise(runs):
    """Median and min-max of every numeric figure over the runs."""
    summary = {}
    for key in runs[0]:
        values = [run[key] for run in runs if isinstance(run.get(key), int | float)]
        if values:
            summary[key] = {
                "median": round(statistics.median(values), 3),
                "min": round(min(values), 3),
                "max": round(max(values), 3),
            }
    return summary


# --- the run -------------------------------------------------------------------


def prepare(args, workdir, cleanup):
    """The generated project (synced, migrated, static collected) and its production environment."""
    project = bench_project.generated(args.project, workdir)
    if not args.from_source:
        bench_project.compile_bytecode(project)

    def started(thing):
        cleanup.append(thing)
        return thing

    env, domain, _, _ = bench_project.dependencies(project, workdir, started)
    env.update(bytecode_env(args, workdir), DJANGO_SETTINGS_MODULE="config.settings.prod", HOST="127.0.0.1")
    bench_project.migrated(project, env)
    return project, env, domain


def bytecode_env(args, workdir):
    """With --from-source, point Python's bytecode cache at an empty directory it never writes."""
    if not args.from_source:
        return {}
    return {"PYTHONPYCACHEPREFIX": str(workdir / "no-pycache"), "PYTHONDONTWRITEBYTECODE": "1"}


def table(header, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths, strict=True))]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def report(results):
    imports = results["importtime"]
    print(f"bytecode: {results['bytecode']}; machine load at start {results['loadavg_at_start']}")
    print(f"\n== import config.asgi under -X importtime: {imports['total_ms']} ms of imports")
    print(
        table(
            ["package", "self ms", "share"],
            [[p["package"], p["self_ms"], p["share"]] for p in imports["packages"][:15]],
        )
    )
    print()
    print(
        table(
            ["module", "cumulative ms", "self ms"],
            [
                [m["module"], round(m["cumulative_ms"], 1), round(m["self_ms"], 1)]
                for m in imports["modules"][:15]
            ],
        )
    )
    print("\n== one worker in-process (seconds; ms where marked)")
    print(table(["phase", "value"], [[k, v] for k, v in results["probe"]["phases"].items()]))
    for label, modules in results["probe"]["first_request_imports"].items():
        print(f"modules the first {label} imports: {sum(modules.values())} {dict(list(modules.items())[:8])}")
    print(
        f"\n== bin/serve (1 worker) and bare Django on uvicorn (1 worker), {results['repeats']} starts each"
    )
    rows = []
    for server in ("bin/serve", "bare Django"):
        for key, value in results["serve"][server]["summary"].items():
            rows.append([server, key, value["median"], f"{value['min']}-{value['max']}"])
    print(table(["server", "figure", "median", "min-max"], rows))
    ratio = results.get("ratio first 200")
    if ratio:
        print(f"\nfirst 200, bin/serve / bare Django: {ratio}x (target: at most 2x)")
        print(f"ready (/health/ 200), bin/serve / bare Django's first 200: {results.get('ratio ready')}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="starts of each server")
    parser.add_argument("--project", help="use this generated project instead of generating one")
    parser.add_argument("--output", help="write the figures as JSON here")
    parser.add_argument(
        "--from-source",
        action="store_true",
        help="no compiled bytecode: every start compiles each module (an install without it)",
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="djust-startup-"))
    cleanup = []
    results = {
        "machine": machine(),
        "loadavg_at_start": os.getloadavg(),
        "repeats": args.repeats,
        "bytecode": "from source" if args.from_source else "compiled",
    }
    try:
        project, env, domain = prepare(args, workdir, cleanup)
        python = str(project.path / ".venv" / "bin" / "python")
        project_env = project.env(**env)
        log("python -X importtime -c 'import config.asgi'")
        results["importtime"] = importtime(python, project.path, project_env)
        log("in-process phases and first requests (bench/startup_probe.py)")
        probe = subprocess.run(
            [python, str(PROBE), domain], cwd=project.path, env=project_env,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if probe.returncode != 0:
            raise RuntimeError(f"startup_probe failed:\n{probe.stderr[-3000:]}")
        results["probe"] = json.loads(probe.stdout.strip().splitlines()[-1])
        serve, bare = [], []
        for repeat in range(args.repeats):
            # Alternate, so a burst of load elsewhere hits both servers alike.
            log(f"start {repeat + 1}/{args.repeats}: bin/serve, then bare Django")
            serve.append(serve_once(project, env, domain, workdir))
            bare.append(bare_once(python, workdir, bytecode_env(args, workdir)))
        results["serve"] = {
            "bin/serve": {"runs": serve, "summary": summarise(serve)},
            "bare Django": {"runs": bare, "summary": summarise(bare)},
        }
        ours = results["serve"]["bin/serve"]["summary"]
        floor = results["serve"]["bare Django"]["summary"]["first 200 (/health/live/)"]["median"]
        results["ratio first 200"] = round(ours["first 200 (/health/live/)"]["median"] / floor, 2)
        results["ratio ready"] = round(ours["ready (/health/ 200)"]["median"] / floor, 2)
        results["loadavg_at_end"] = os.getloadavg()
    finally:
        stop_all(cleanup)
        shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    if args.output:
        write_json(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
