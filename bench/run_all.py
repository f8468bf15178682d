#!/usr/bin/env python3
"""Runs the benchmark suite and compares multiproc with every other competitor.

Every folder bench/<scenario>/ (except common/, results/ and experiments/) is a scenario; every
<competitor>.cpp in it (built as <build>/bench/bench_<scenario>_<competitor>) and every
<competitor>.py is a competitor program speaking the protocol of bench/README.md. Each program
runs once per placement of the scenario (BENCH_PLACEMENT) and repeat times (quick: 3, full: 5),
round-robin so that drifting machine load hits every competitor alike; the runner keeps medians
and computes ratios against multiproc, oriented so that > 1 always means multiproc wins.

Writes bench/results/latest.json, latest.md and the charts queue_throughput.png and latency.png
(with matplotlib; skipped with a warning without it). Exits 1 when any program failed, crashed,
timed out, printed malformed output or reported a failed check, after running everything else.
Standard library only (matplotlib optional); needs no terminal and no stdin (CI=true is fine).

    run_all.py --build build/release [--quick | --mode smoke|quick|full] [--only SCENARIO,...]
               [--competitor NAME,...] [--repeat N] [--results DIR] [--no-charts]
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NOT_SCENARIOS = {"common", "results", "experiments", "__pycache__"}
BASELINE = "multiproc"
# Column order: multiproc first, then the products, then the raw baselines and bounds.
PREFERRED = ["multiproc", "multiproc_zerocopy", "python_mp", "boost_mq", "pipe", "socketpair",
             "spsc_ring", "mpmc_ring", "memcpy"]
# Raw rings and memcpy: hardware bounds, not products (dashed in the charts). A scenario.json may
# name, per case, the bound its products are measured against ("bounds"), and the fraction of it
# aimed at ("bound_aims"); the tables then show each multiproc figure as a fraction of its bound.
BOUNDS = ("spsc_ring", "mpmc_ring", "memcpy")
REPEATS = {"smoke": 1, "quick": 3, "full": 5}
TIMEOUTS = {"smoke": 60, "quick": 120, "full": 600}
KEYS = {"scenario": str, "case": str, "competitor": str, "placement": str, "metric": str,
        "unit": str, "higher_is_better": bool, "ok": bool, "check": str}


def log(msg=""):
    print(msg, flush=True)


# ---- discovery ------------------------------------------------------------------------------------

class Competitor:
    def __init__(self, name, kind, source):
        self.name, self.kind, self.source = name, kind, source


class Scenario:
    def __init__(self, name, path):
        self.name, self.path = name, path
        cfg_file = path / "scenario.json"
        self.config = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
        self.competitors = []

    def placements(self, mode):
        if mode != "full" and "placements_quick" in self.config:
            return self.config["placements_quick"]
        return self.config.get("placements", ["unpinned"])


def competitor_order(name):
    return (PREFERRED.index(name) if name in PREFERRED else len(PREFERRED), name)


def color_of(name):
    """One colour per competitor in every chart; multiproc in black."""
    if name == BASELINE:
        return "black"
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
               "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
    index = PREFERRED.index(name) - 1 if name in PREFERRED else len(PREFERRED) + sum(map(ord, name))
    return palette[index % len(palette)]


def discover(only, competitors_filter):
    scenarios = []
    for d in sorted(BENCH.iterdir()):
        if not d.is_dir() or d.name in NOT_SCENARIOS or d.name.startswith((".", "_")):
            continue
        if only and d.name not in only:
            continue
        s = Scenario(d.name, d)
        for f in sorted(d.iterdir()):
            if f.suffix in (".cpp", ".py") and not f.name.startswith(("_", ".")):
                if competitors_filter and f.stem not in competitors_filter:
                    continue
                s.competitors.append(Competitor(f.stem, f.suffix[1:], f))
        s.competitors.sort(key=lambda c: competitor_order(c.name))
        if s.competitors:
            scenarios.append(s)
    scenarios.sort(key=lambda s: (s.config.get("order", 1000), s.name))
    return scenarios


def command_for(scenario, comp, build, mode):
    """The command line of a competitor, or (None, why) when its program is not built."""
    if comp.kind == "py":
        return [sys.executable, str(comp.source), "--mode", mode], None
    exe = f"bench_{scenario.name}_{comp.name}"
    for candidate in (build / "bench" / exe, build / exe):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate), "--mode", mode], None
    return None, f"{exe} is not built in {build} (build the bench_all target)"


# ---- running ------------------------------------------------------------------------------------

def start_scenario_redis(scenario):
    """For a scenario whose scenario.json says "redis_server": true, a redis-server for all its
    competitors (bench/redis/_redis_server.py), its URL exported as BENCH_REDIS_URL."""
    if not scenario.config.get("redis_server"):
        return None
    sys.path.insert(0, str(scenario.path))
    try:
        import _redis_server
    finally:
        sys.path.pop(0)
    os.environ.pop("BENCH_REDIS_URL", None)
    url, proc = _redis_server.start()
    os.environ["BENCH_REDIS_URL"] = url
    log(f"[{scenario.name}] redis-server at {url}")
    return _redis_server, proc


def stop_scenario_redis(server):
    if server is not None:
        module, proc = server
        module.stop(proc)
        os.environ.pop("BENCH_REDIS_URL", None)


def run_program(cmd, placement, timeout):
    """Runs cmd in its own process group; kills the whole group on timeout and any process it left
    behind. Returns (returncode or None on timeout, stdout, stderr, seconds, warnings)."""
    env = dict(os.environ, BENCH_PLACEMENT=placement, PYTHONDONTWRITEBYTECODE="1")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    warnings = []
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        _killpg(proc.pid)
        out, err = proc.communicate()
        rc = None
    secs = time.monotonic() - t0
    if rc is not None:
        # Helpers that leave when their parent does (Python's forkserver and resource tracker)
        # get a moment to go; whatever is still there then is killed and reported.
        deadline = time.monotonic() + 2.0
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _killpg(proc.pid):
            warnings.append("left processes running after it exited (killed)")
    return rc, out, err, secs, warnings


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _killpg(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def parse_output(out, scenario, competitor, placement):
    """JSON lines -> (records, problems). Lines that are not JSON objects are problems."""
    records, problems = [], []
    for n, line in enumerate(out.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"stdout line {n} is not JSON: {line[:120]!r}")
            continue
        if not isinstance(rec, dict):
            problems.append(f"stdout line {n} is not a JSON object")
            continue
        bad = [k for k, t in KEYS.items() if not isinstance(rec.get(k), t)]
        value = rec.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            bad.append("value")
        if bad:
            problems.append(f"stdout line {n}: missing or mistyped {', '.join(bad)}")
            continue
        for key, want in (("scenario", scenario), ("competitor", competitor),
                          ("placement", placement)):
            if rec[key] != want:
                problems.append(f"line {n} reports {key} {rec[key]!r}, expected {want!r}")
        records.append(rec)
    if not records and not problems:
        problems.append("printed no results")
    return records, problems


# ---- machine ------------------------------------------------------------------------------------

def first_line(cmd):
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def cmake_cache(build):
    cache = {}
    try:
        for line in (build / "CMakeCache.txt").read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9_]+):[A-Z]+=(.*)$", line)
            if m:
                cache[m.group(1)] = m.group(2)
    except OSError:
        pass
    return cache


def boost_version(cache):
    dirs = [cache.get("Boost_INCLUDE_DIR", ""), "/usr/include", "/usr/local/include"]
    for d in dirs:
        try:
            text = (Path(d) / "boost" / "version.hpp").read_text()
        except OSError:
            continue
        m = re.search(r"#define\s+BOOST_VERSION\s+(\d+)", text)
        if m:
            v = int(m.group(1))
            return f"{v // 100000}.{v // 100 % 1000}.{v % 100}"
    return "not found"


def machine_info(build):
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cache = cmake_cache(build)
    cxx = cache.get("CMAKE_CXX_COMPILER", "g++")
    git = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "compiler": first_line([cxx, "--version"]),
        "build_type": cache.get("CMAKE_BUILD_TYPE", "unknown"),
        "python": f"Python {platform.python_version()} ({sys.executable})",
        "boost": boost_version(cache),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "git_commit": git if re.fullmatch(r"[0-9a-f]{4,40}", git or "") else "none",
    }


# ---- aggregation --------------------------------------------------------------------------------

def aggregate(scenario, runs):
    """runs: list of (competitor, placement, records). Returns rows: one per (case, placement,
    metric) with per-competitor cells {values, median, ok, na, check, note} and ratios."""
    rows = {}
    for comp, placement, records in runs:
        for r in records:
            key = (r["case"], r["placement"], r["metric"])
            row = rows.setdefault(key, {"case": r["case"], "placement": r["placement"],
                                        "metric": r["metric"], "unit": r["unit"],
                                        "higher_is_better": r["higher_is_better"], "cells": {}})
            cell = row["cells"].setdefault(comp, {"values": [], "ok": True, "na": False,
                                                  "check": "", "note": ""})
            cell["ok"] = cell["ok"] and r["ok"]
            if r["value"] is None and r["ok"]:
                cell["na"] = True
            elif r["value"] is not None:
                cell["values"].append(float(r["value"]))
            cell["check"] = r["check"]
            if r.get("note"):
                cell["note"] = str(r["note"])
    case_order = scenario.config.get("cases", [])
    placement_order = scenario.placements("full")

    def order(key):
        case, placement, _metric = key
        ci = case_order.index(case) if case in case_order else len(case_order)
        pi = placement_order.index(placement) if placement in placement_order else 99
        return (ci, pi)

    out = []
    for key in sorted(rows, key=order):  # stable: metrics keep the order programs print them
        row = rows[key]
        for cell in row["cells"].values():
            cell["median"] = statistics.median(cell["values"]) if cell["values"] and cell["ok"] \
                else None
        base = row["cells"].get(BASELINE, {}).get("median")
        for comp, cell in row["cells"].items():
            cell["ratio"] = None
            if comp != BASELINE and base and cell["median"]:
                cell["ratio"] = (base / cell["median"] if row["higher_is_better"]
                                 else cell["median"] / base)
        # Fraction of the case's bound, in this same run (higher-is-better metrics only).
        bound = scenario.config.get("bounds", {}).get(row["case"])
        bound_median = row["cells"].get(bound, {}).get("median") if bound else None
        if bound_median and row["higher_is_better"]:
            row["bound"] = bound
            row["bound_aim"] = scenario.config.get("bound_aims", {}).get(row["case"])
            for comp, cell in row["cells"].items():
                if comp not in BOUNDS and cell["median"]:
                    cell["of_bound"] = cell["median"] / bound_median
        out.append(row)
    return out


# ---- formatting ---------------------------------------------------------------------------------

def sig3(x):
    if x == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{digits}f}"


def fmt_value(v, unit):
    if unit in ("items/s", "tasks/s", "B/s"):
        suffix = "B/s" if unit == "B/s" else "/s"
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
            if abs(v) >= scale:
                return f"{sig3(v / scale)} {prefix}{suffix}"
        return f"{sig3(v)} {suffix}" if unit == "B/s" else f"{sig3(v)}/s"
    if unit == "us":
        return f"{sig3(v)} µs"
    if unit == "x":
        return f"{sig3(v)}×"
    return f"{sig3(v)} {unit}"


def fmt_cell(cell):
    if cell is None:
        return "—"
    if not cell["ok"]:
        return "**FAIL**"
    if cell["na"]:
        return "n/a"
    if cell["median"] is None:
        return "—"
    return None  # the caller formats the value


def metric_label(row):
    arrow = "↑" if row["higher_is_better"] else "↓"
    return f"{row['metric']} {arrow}"


def render_markdown(meta, scenarios, tables, failures):
    m = meta["machine"]
    lines = [
        "# multiproc benchmarks",
        "",
        f"Mode **{meta['mode']}**, each program run {meta['repeat']}× (round-robin), medians shown; "
        f"{meta['duration_s']:.0f} s in all.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['kernel']}",
        f"- Compiler: {m['compiler']} ({m['build_type']}); {m['python']}; Boost {m['boost']}",
        f"- Date: {m['date']}; load average at start {m['load_average_at_start']}; "
        f"commit {m['git_commit']}",
        "",
        "**(×r)** after a figure is multiproc's advantage over that competitor: multiproc ÷ "
        "competitor for throughput-like metrics (↑, higher is better), competitor ÷ multiproc for "
        "latency and time (↓, lower is better). So **r > 1 means multiproc wins**, r < 1 that it "
        "loses. — = no result (competitor not written yet, or nothing to compare with); n/a = "
        "the case does not apply to that competitor; FAIL = crashed, timed out or failed its check.",
        "**[f of bound]** after a multiproc figure is that figure divided by the hardware bound's "
        "(a raw ring, named in the scenario's table of fractions) in the same run.",
        "",
    ]
    for s in scenarios:
        rows = tables.get(s.name, [])
        comps = [c.name for c in s.competitors]
        if BASELINE not in comps:
            comps = [BASELINE] + comps
        lines.append(f"## {s.name}: {s.config.get('title', '')}".rstrip(": "))
        lines.append("")
        if s.config.get("description"):
            lines += [s.config["description"], ""]
        if not rows:
            lines += ["No results.", ""]
            continue
        lines.append("| case | placement | metric | " + " | ".join(comps) + " |")
        lines.append("|---|---|---|" + "---|" * len(comps))
        for row in rows:
            cells = []
            for c in comps:
                cell = row["cells"].get(c)
                text = fmt_cell(cell)
                if text is None:
                    text = fmt_value(cell["median"], row["unit"])
                    if cell["ratio"] is not None:
                        text += f" (×{sig3(cell['ratio'])})"
                    if c.startswith(BASELINE) and cell.get("of_bound") is not None:
                        text += f" [{cell['of_bound']:.2f} of bound]"
                cells.append(text)
            lines.append(f"| {row['case']} | {row['placement']} | {metric_label(row)} | "
                         + " | ".join(cells) + " |")
        notes = sorted({f"{c}: {cell['note']}" for row in rows for c, cell in row["cells"].items()
                        if cell["note"] and cell["na"]})
        if notes:
            lines += ["", "n/a: " + "; ".join(notes) + "."]
        lines.append("")
        lines += render_fractions(s, rows)
    lines += render_failures(failures)
    return "\n".join(lines)


def render_fractions(scenario, rows):
    """The multiproc competitors as fractions of each case's bound (scenario.json "bounds")."""
    rows = [r for r in rows if r.get("bound") and r["metric"] in ("items_per_s", "tasks_per_s")]
    if not rows:
        return []
    comps = [c.name for c in scenario.competitors
             if c.name.startswith(BASELINE) and c.name not in BOUNDS]
    lines = ["Fractions of the bound (median ÷ the bound's median, same run"
             + (f"; {scenario.config['bounds_note']}" if scenario.config.get("bounds_note") else "")
             + "):", "",
             "| case | placement | bound | " + " | ".join(comps) + " | aim |",
             "|---|---|---|" + "---|" * (len(comps) + 1)]
    for row in rows:
        cells = []
        for c in comps:
            f = row["cells"].get(c, {}).get("of_bound")
            cells.append("—" if f is None else f"{f:.2f}")
        aim = row.get("bound_aim")
        lines.append(f"| {row['case']} | {row['placement']} | {row['bound']} "
                     f"{fmt_value(row['cells'][row['bound']]['median'], row['unit'])} | "
                     + " | ".join(cells) + f" | {'≥ ' + str(aim) if aim else ''} |")
    lines.append("")
    return lines


def render_failures(failures):
    lines = ["## Failures", ""]
    if failures:
        for f in failures:
            lines.append(f"- {f['scenario']}/{f['competitor']} ({f['placement']}, run {f['run']}): "
                         f"{f['what']}")
    else:
        lines.append("None.")
    lines.append("")
    return lines


# ---- charts -------------------------------------------------------------------------------------

def cell_median(rows, case, placement, metric, comp):
    for row in rows:
        if (row["case"], row["placement"], row["metric"]) == (case, placement, metric):
            cell = row["cells"].get(comp)
            return cell["median"] if cell and cell["ok"] and not cell["na"] else None
    return None


def write_charts(tables, scenarios, results_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("run_all: matplotlib not available, no charts")
        return []
    written = []
    by_name = {s.name: s for s in scenarios}

    rows = tables.get("queue_throughput")
    if rows:
        placements = [p for p in by_name["queue_throughput"].placements("full")
                      if any(r["placement"] == p for r in rows)]
        placement = placements[0] if placements else rows[0]["placement"]
        sizes = [("int64_1to1", 8), ("bytes1k_1to1", 1024), ("bytes64k_1to1", 65536),
                 ("bytes1m_1to1", 1 << 20)]
        fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
        for comp in [c.name for c in by_name["queue_throughput"].competitors]:
            xs, items, nbytes = [], [], []
            for case, size in sizes:
                v = cell_median(rows, case, placement, "items_per_s", comp)
                if v:
                    xs.append(size)
                    items.append(v)
                    nbytes.append(v * size)
            if xs:
                style = "--" if comp in BOUNDS else "-"
                width = 2.5 if comp == BASELINE else 1.5
                axes[0].plot(xs, items, style, marker="o", label=comp, linewidth=width,
                             color=color_of(comp))
                axes[1].plot(xs, nbytes, style, marker="o", label=comp, linewidth=width,
                             color=color_of(comp))
        for ax, ylabel in ((axes[0], "items/s"), (axes[1], "bytes/s")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks([s for _, s in sizes], ["8 B", "1 KiB", "64 KiB", "1 MiB"])
            ax.set_xlabel("item size")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=8)
        # Third panel: each multiproc competitor as a fraction of the case's bound, same run.
        frac_rows = [r for r in rows if r["placement"] == placement and r.get("bound")
                     and r["metric"] == "items_per_s"]
        comps = [c.name for c in by_name["queue_throughput"].competitors
                 if c.name.startswith(BASELINE)]
        width = 0.8 / max(1, len(comps))
        for i, comp in enumerate(comps):
            xs = [j + (i - (len(comps) - 1) / 2) * width for j, r in enumerate(frac_rows)
                  if r["cells"].get(comp, {}).get("of_bound")]
            ys = [r["cells"][comp]["of_bound"] for r in frac_rows
                  if r["cells"].get(comp, {}).get("of_bound")]
            if xs:
                axes[2].bar(xs, ys, width, label=comp, color=color_of(comp))
        for j, r in enumerate(frac_rows):
            if r.get("bound_aim"):
                axes[2].plot([j - 0.45, j + 0.45], [r["bound_aim"]] * 2, "r:", linewidth=1.5)
        axes[2].set_xticks(range(len(frac_rows)),
                           [f"{r['case']}\n÷ {r['bound']}" for r in frac_rows], fontsize=7)
        axes[2].set_ylabel("fraction of the bound (dotted: aim)")
        axes[2].set_ylim(0, 1.1)
        axes[2].grid(True, axis="y", alpha=0.3)
        axes[2].legend(fontsize=8)
        fig.suptitle(f"Queue throughput, 1 producer → 1 consumer ({placement}); dashed = bounds; "
                     "right: multiproc ÷ bound")
        fig.tight_layout()
        written.append(_save(fig, results_dir / "queue_throughput.png"))
        plt.close(fig)

    ping, apply_rows = tables.get("queue_pingpong"), tables.get("pool_apply_roundtrip")
    if ping or apply_rows:
        panels = [p for p in (ping, apply_rows) if p]
        fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.8), squeeze=False)
        for ax, rows, name in zip(axes[0], panels, [n for n, p in (("queue_pingpong", ping),
                                  ("pool_apply_roundtrip", apply_rows)) if p]):
            comps = [c.name for c in by_name[name].competitors]
            placements = [p for p in by_name[name].placements("full")
                          if any(r["placement"] == p for r in rows)]
            case = rows[0]["case"]
            width = 0.8 / max(3, len(comps))
            for i, comp in enumerate(comps):
                xs, p50, p99 = [], [], []
                for j, placement in enumerate(placements):
                    a = cell_median(rows, case, placement, "p50_us", comp)
                    b = cell_median(rows, case, placement, "p99_us", comp)
                    if a:
                        xs.append(j + (i - (len(comps) - 1) / 2) * width)
                        p50.append(a)
                        p99.append(b if b else a)
                if xs:
                    ax.bar(xs, p50, width, label=comp, color=color_of(comp))
                    ax.scatter(xs, p99, marker="_", s=200, color=color_of(comp), zorder=3)
            ax.set_xticks(range(len(placements)), placements)
            ax.set_yscale("log")
            ax.set_ylabel("round trip, µs (bar p50, dash p99)")
            ax.set_title(name)
            ax.grid(True, axis="y", which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("Round-trip latency by placement and competitor (lower is better)")
        fig.tight_layout()
        written.append(_save(fig, results_dir / "latency.png"))
        plt.close(fig)
    return written


def _save(fig, path):
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)
    return path


def write_atomic(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- main ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build/release",
                    help="CMake build directory holding bench/bench_* (default build/release)")
    ap.add_argument("--mode", choices=("smoke", "quick", "full"), default="full")
    ap.add_argument("--quick", action="store_const", const="quick", dest="mode",
                    help="same as --mode quick (under 2 minutes)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only these scenarios (comma-separated or repeated)")
    ap.add_argument("--competitor", action="append", default=[],
                    help="run only these competitors (comma-separated or repeated)")
    ap.add_argument("--repeat", type=int, help="runs per program (default smoke 1, quick 3, "
                    "full 5)")
    ap.add_argument("--results", default=str(BENCH / "results"),
                    help="output folder (default bench/results)")
    ap.add_argument("--no-charts", action="store_true")
    args = ap.parse_args()

    build = Path(args.build)
    if not build.is_absolute():
        build = Path.cwd() / build
    only = {x for o in args.only for x in o.split(",") if x}
    comps_filter = {x for o in args.competitor for x in o.split(",") if x}
    repeat = args.repeat or REPEATS[args.mode]
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)

    scenarios = discover(only, comps_filter)
    unknown = only - {s.name for s in scenarios}
    if unknown:
        log(f"run_all: no such scenario: {', '.join(sorted(unknown))}")
        return 2
    machine = machine_info(build)
    log(f"run_all: mode {args.mode}, {repeat} run(s) per program, build {build}")
    log(f"run_all: {machine['cpu']}, {machine['cores']} cores, {machine['kernel']}, "
        f"load {machine['load_average_at_start']}")

    t_start = time.monotonic()
    failures = []
    tables = {}
    for s in scenarios:
        timeout = s.config.get("timeout_s", {}).get(args.mode, TIMEOUTS[args.mode])
        runs = []
        # A scenario through Redis (bench/redis/): one server for all its competitors, side by
        # side; they find it in BENCH_REDIS_URL (run alone, each starts its own).
        redis_server = start_scenario_redis(s)
        for comp in s.competitors:
            cmd, why = command_for(s, comp, build, args.mode)
            if cmd is None:
                failures.append({"scenario": s.name, "competitor": comp.name, "placement": "-",
                                 "run": 0, "what": why})
                log(f"[{s.name}] {comp.name}: NOT BUILT: {why}")
        for rep in range(1, repeat + 1):
            for comp in s.competitors:
                cmd, _ = command_for(s, comp, build, args.mode)
                if cmd is None:
                    continue
                for placement in s.placements(args.mode):
                    rc, out, err, secs, warnings = run_program(cmd, placement, timeout)
                    records, problems = parse_output(out, s.name, comp.name, placement)
                    if rc is None:
                        problems.insert(0, f"timed out after {timeout} s")
                    elif rc != 0:
                        problems.insert(0, f"exit status {rc}" + (
                            f" (signal {-rc})" if rc < 0 else ""))
                    for r in records:
                        if not r["ok"]:
                            what = f"check failed: {r['case']} {r['metric']}: {r['check']}"
                            if r.get("note"):
                                what += f" ({r['note']})"
                            problems.append(what)
                    if problems:
                        tail = " | ".join(err.strip().splitlines()[-3:]) if err.strip() else ""
                        what = "; ".join(problems) + (f"; stderr: {tail}" if tail else "")
                        failures.append({"scenario": s.name, "competitor": comp.name,
                                         "placement": placement, "run": rep, "what": what})
                        # a crash fails every figure the program would have printed
                        if rc != 0:
                            records = [dict(r, ok=False) for r in records]
                    runs.append((comp.name, placement, records))
                    status = "ok" if not problems else "FAILED"
                    extra = f" ({'; '.join(warnings)})" if warnings else ""
                    log(f"[{s.name}] {comp.name:<11} {placement:<8} run {rep}/{repeat}: "
                        f"{secs:5.2f} s {status}{extra}")
                    for w in warnings:
                        log(f"run_all: warning: {s.name}/{comp.name}: {w}")
        stop_scenario_redis(redis_server)
        tables[s.name] = aggregate(s, runs)
        # programs that crashed before printing a figure still show up as FAIL
        for f in failures:
            if f["scenario"] != s.name:
                continue
            for row in tables[s.name]:
                if f["placement"] in (row["placement"], "-") and f["competitor"] not in row["cells"]:
                    row["cells"][f["competitor"]] = {"values": [], "ok": False, "na": False,
                                                     "check": "", "note": f["what"],
                                                     "median": None, "ratio": None}

    meta = {"mode": args.mode, "repeat": repeat, "duration_s": time.monotonic() - t_start,
            "machine": machine, "scenarios": [s.name for s in scenarios]}
    machine["load_average_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    doc = {
        **meta,
        "ratio_definition": "multiproc / competitor when higher_is_better, competitor / multiproc "
                            "otherwise: > 1 means multiproc wins",
        "results": [
            {"scenario": s.name, "case": row["case"], "placement": row["placement"],
             "metric": row["metric"], "unit": row["unit"],
             "higher_is_better": row["higher_is_better"], "competitor": comp,
             "values": cell["values"], "median": cell["median"], "ok": cell["ok"],
             "na": cell["na"], "check": cell["check"], "note": cell["note"],
             "ratio_vs_multiproc": cell["ratio"]}
            for s in scenarios for row in tables.get(s.name, [])
            for comp, cell in row["cells"].items()
        ],
        "failures": failures,
    }
    written = []
    if not args.no_charts:
        try:
            written += write_charts(tables, scenarios, results_dir)
        except Exception as e:  # a chart must never cost the results
            log(f"run_all: charts failed: {type(e).__name__}: {e}")
            failures.append({"scenario": "-", "competitor": "-", "placement": "-", "run": 0,
                             "what": f"charts failed: {type(e).__name__}: {e}"})
    markdown = render_markdown(meta, scenarios, tables, failures)
    write_atomic(results_dir / "latest.json", json.dumps(doc, indent=1) + "\n")
    write_atomic(results_dir / "latest.md", markdown)
    written = [results_dir / "latest.json", results_dir / "latest.md"] + written
    log("")
    log(markdown)
    log("run_all: wrote " + ", ".join(str(p) for p in written))
    log(f"run_all: {len(failures)} failure(s), {time.monotonic() - t_start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
