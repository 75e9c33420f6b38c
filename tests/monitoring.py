"""A real Prometheus (Debian's package) for the tests, on 127.0.0.1 and a free port.

It scrapes the targets it is given every second, loads the alerting rules it is
given, and answers PromQL through its HTTP API. Started by the test that needs
it, stopped by its pid; every wait is bounded.
"""

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from tests.stack import free_port, stop_pid, wait_for

PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "max", "min",
    "avg", "count", "le", "on", "ignoring", "and", "or", "unless", "bool", "offset", "clamp_min",
    "abs", "delta", "deriv", "time", "vector", "scalar", "topk", "bottomk", "absent",
    "max_over_time", "min_over_time", "avg_over_time", "sum_over_time", "changes", "resets",
}  # fmt: skip


def tool(name):
    """Path of prometheus or promtool; the Debian package puts both on PATH."""
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: apt-get install prometheus")
    return found


def metric_names(expr):
    """The metric names a PromQL expression reads (functions, keywords and labels dropped)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_matchers = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_matchers)
    without_ranges = re.sub(r"\[[^\]]*\]", "[]", without_groupings)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", without_ranges))
    return {name for name in names if name not in PROMQL_WORDS and not name.isdigit()}


class Prometheus:
    """prometheus --config.file ... with a 1 s scrape and evaluation interval."""

    def __init__(self, directory, job, targets, rule_files=()):
        self.directory = Path(directory)
        self.job = job
        self.port = free_port()
        self.targets = list(targets)
        self.rule_files = [str(path) for path in rule_files]
        self.process = None

    def write_config(self):
        # JSON is YAML: no YAML writer needed.
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": self.rule_files,
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        path = self.directory / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout=30):
        config = self.write_config()
        self.log = (self.directory / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._ready, timeout, f"prometheus on port {self.port}", interval=0.2)
        return self

    def _ready(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}: {self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr):
        """The value of an instant query that yields one number, or None if it yields nothing."""
        result = self.api("query", query=expr)["result"]
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expr} gave {len(result)} series; sum() it")
        return float(result[0]["value"][1])

    def wait_for_value(self, expr, predicate, timeout, what):
        """Poll a query until predicate(value) holds; return the value (bounded)."""
        seen = []

        def check():
            value = self.query(expr)
            seen.append(value)
            return value is not None and predicate(value)

        try:
            wait_for(check, timeout, what, interval=0.5)
        except TimeoutError:
            raise AssertionError(f"{what}: `{expr}` was {seen[-5:]} (last polls)") from None
        return seen[-1]

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            stop_pid(self.process.pid)
            self.process.wait(timeout=10)
        if self.process is not None:
            self.log.close()

    def tail(self, lines=20):
        path = self.directory / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def promtool(*args, cwd=None, timeout=60):
    """Run promtool (in cwd, where relative rule files resolve); return (exit code, output)."""
    result = subprocess.run(
        [tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    return result.returncode, result.stdout + result.stderr


def scrape_names(text):
    """Metric family names in a Prometheus exposition text (# TYPE lines)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_count", f"{name}_sum"})
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
    return names
