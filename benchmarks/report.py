"""What a run means: the targets with their verdicts, the plots, and summary.md."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.figures import Point, find, fmt, fmt_spread, ratio

if TYPE_CHECKING:
    from benchmarks.runner import Results

PLAIN, NAIVE, SEDNA, JOINT = "plain-http", "naive-ray-serve", "sedna-two-services", "jointserve"
COLORS = {PLAIN: "tab:blue", SEDNA: "tab:orange", NAIVE: "tab:green", JOINT: "tab:red"}  # same in every panel


# -- targets ---------------------------------------------------------------------------------

def targets(results: Results) -> list[dict[str, Any]]:
    """The issue's targets, each as {name, target, value, holds}; a missing figure never holds."""
    points, sections = results.points, results.sections
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, value: float | None, holds: bool | None, unit: str = "") -> None:
        shown = "n/a" if value is None else f"{value:.2f}{unit}"
        out.append({"name": name, "target": target, "value": shown, "raw": value,
                    "holds": bool(holds) if value is not None else False})

    easy1 = _median(find(points, JOINT, "easy", "c", 1), "p50_ms")
    plain1 = _median(find(points, PLAIN, "easy", "c", 1), "p50_ms")
    r = ratio(easy1, plain1)
    add("easy p50 at c=1, jointserve / plain HTTP", "<= 1.5x", r, r is not None and r <= 1.5, "x")
    easy8 = _median(find(points, JOINT, "easy", "c", 8), "throughput_rps")
    plain8 = _median(find(points, PLAIN, "easy", "c", 8), "throughput_rps")
    r = ratio(easy8, plain8)
    add("easy throughput at c=8, jointserve / plain HTTP", ">= 0.8x", r, r is not None and r >= 0.8, "x")
    joint_mixed = _best(points, JOINT, "mixed")
    naive_mixed = _best(points, NAIVE, "mixed")
    r = ratio(joint_mixed, naive_mixed)
    add("mixed throughput (best concurrency), jointserve / naive Ray Serve", ">= 3x", r,
        r is not None and r >= 3, "x")
    for row in sections.get("wan", {}).get("rows", []):
        if row["rtt_ms"] == 0:
            continue
        add(f"hard p50 at RTT {row['rtt_ms']} ms minus measured network and cloud serving time "
            "(the gateway's own cost)",
            "<= 2 ms", row["gateway_cost_ms"], row["gateway_cost_ms"] <= 2, " ms")
    batching = sections.get("batching", {})
    r = batching.get("ratio")
    add("cloud throughput at c=32, batching on / off", ">= 3x", r, r is not None and r >= 3, "x")
    added = sections.get("breaker", {}).get("added_ms_breaker_open")
    add("added latency of a hard request with the breaker open (vs easy)", "<= 1 ms", added,
        added is not None and added <= 1, " ms")
    switch = sections.get("version_switch", {})
    failures = switch.get("failures")
    add("failed requests during two edge version switches under load", "0",
        None if failures is None else float(failures), failures == 0)
    routing = sections.get("routing", {})
    best = routing.get("best_policy")
    pgr = _pgr_at(routing, best, "0.2") if best else None
    add(f"PGR at 20% offload, best policy ({best})", ">= 0.9", pgr, pgr is not None and pgr >= 0.9)
    return out


def _median(point: Point | None, figure: str) -> float | None:
    return point.median(figure) if point else None


def _best(points: list[Point], system: str, traffic: str) -> float | None:
    values = [p.median("throughput_rps") for p in points
              if (p.system, p.traffic, p.mode) == (system, traffic, "c")]
    return max(values) if values else None


def _pgr_at(routing: dict[str, Any], policy: str, offload: str) -> float | None:
    try:
        return routing["policies"][policy]["at"][offload]["pgr"]["mean"]
    except KeyError:
        return None


# -- plots -----------------------------------------------------------------------------------

def plots(results: Results, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    paths = [_latency_plot(results.points, out / "latency_throughput.png")]
    wan = results.sections.get("wan")
    if wan:
        paths.append(_wan_plot(wan, out / "wan_hard_path.png"))
    routing = results.sections.get("routing")
    if routing:
        from benchmarks.routing import plot_routing

        paths.extend(plot_routing(routing, out))
    return paths


def _latency_plot(points: list[Point], path: Path) -> Path:
    import matplotlib.pyplot as plt

    systems = [s for s in (PLAIN, SEDNA, NAIVE, JOINT) if any(p.system == s for p in points)]
    traffics = [t for t in ("easy", "mixed", "hard") if any(p.traffic == t for p in points)]
    fig, axes = plt.subplots(2, len(traffics), figsize=(5 * len(traffics), 8), squeeze=False)
    for column, traffic in enumerate(traffics):
        for system in systems:
            series = sorted((p for p in points if (p.system, p.traffic, p.mode) == (system, traffic, "c")),
                            key=lambda p: p.level)
            if not series:
                continue
            levels = [p.level for p in series]
            style = {"label": system, "color": COLORS[system]}
            axes[0][column].plot(levels, [p.median("p50_ms") for p in series], "o-", **style)
            axes[1][column].plot(levels, [p.median("throughput_rps") for p in series], "o-", **style)
        axes[0][column].set(title=f"{traffic} traffic: p50 latency", xlabel="concurrency",
                            ylabel="ms (log)", xscale="log", yscale="log")
        axes[1][column].set(title=f"{traffic} traffic: throughput", xlabel="concurrency",
                            ylabel="requests/s", xscale="log")
        axes[0][column].legend(fontsize=8)
    fig.suptitle("Same models, same load generator (vegeta), one run; medians of the repeats")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _wan_plot(wan: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    rows = wan["rows"]
    rtts = [r["rtt_ms"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rtts, [r["hard_p50_ms"] for r in rows], "o-", label="hard request p50 (jointserve)")
    ax.plot(rtts, [r + wan["cloud_direct_p50_ms"] for r in rtts], "--",
            label="RTT + cloud model served directly (p50)")
    ax.plot(rtts, [r["mixed_mean_ms"] for r in rows], "s-", label="mixed traffic mean")
    ax.set(xlabel="emulated RTT gateway <-> cloud (ms)", ylabel="ms",
           title="Cloud over a WAN (toxiproxy latency toxic), c=1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- summary.md ------------------------------------------------------------------------------

def summary(results: Results, verdicts: list[dict[str, Any]], plot_paths: list[Path]) -> str:
    meta = results.meta
    machine = meta["machine"]
    lines = [
        f"# Benchmark summary ({meta['date']})", "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, Ray {machine['ray']}, "
        f"onnxruntime {machine['onnxruntime']}, {machine['platform']}  ",
        f"Plan: {meta['plan']['duration_s']:g} s per point after {meta['plan']['warmup_s']:g} s warm-up, "
        f"{meta['plan']['repeats']} repeat(s); figures are medians, (min–max) over repeats.  ",
        f"Mixed traffic = the digits test split in order; offload ratio {meta.get('offload_ratio', 0):.3f}.",
        "", "## Targets", "", "| target | value | wanted | verdict |", "|---|---|---|---|",
    ]
    lines += [f"| {t['name']} | {t['value']} | {t['target']} | {'holds' if t['holds'] else '**missed**'} |"
              for t in verdicts]
    lines += ["", "## Latency and throughput (ratios against the plain HTTP baseline in this run)", "",
              "| system | traffic | load | p50 ms | p90 ms | p99 ms | req/s | failed | p50 / plain | req/s / plain |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for point in results.points:
        lines.append(_point_row(results.points, point))
    lines += _context(results)
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plot_paths]
    return "\n".join(lines) + "\n"


def _point_row(points: list[Point], point: Point) -> str:
    plain = find(points, PLAIN, "easy", point.mode, point.level) if point.mode == "c" else None
    p50_ratio = ratio(point.median("p50_ms"), _median(plain, "p50_ms"))
    rps_ratio = ratio(point.median("throughput_rps"), _median(plain, "throughput_rps"))
    load = f"c={point.level:g}" if point.mode == "c" else f"{point.level:g}/s"
    return (f"| {point.system} | {point.traffic} | {load} | {fmt_spread(point, 'p50_ms')} | "
            f"{fmt(point.median('p90_ms'))} | {fmt_spread(point, 'p99_ms')} | "
            f"{fmt_spread(point, 'throughput_rps', 0)} | {point.failures} | "
            f"{fmt(p50_ratio)} | {fmt(rps_ratio)} |")


def _context(results: Results) -> list[str]:
    sections = results.sections
    lines: list[str] = []
    floor = sections.get("floor")
    if floor:
        lines += ["", "## Floor and load generator", "",
                  f"onnxruntime in process: edge {floor['edge_us']:.1f} µs, cloud {floor['cloud_us']:.1f} µs "
                  f"per call; cloud batch of 32: {floor['cloud_batch32_us_per_row']:.2f} µs per row."]
    ceiling = sections.get("generator_ceiling")
    if ceiling:
        lines.append(f"vegeta against a trivial endpoint (c=8): {ceiling['throughput_rps']:.0f} req/s, "
                     f"p50 {ceiling['p50_ms']:.2f} ms (a lower bound of the generator's own ceiling).")
    wan = sections.get("wan")
    if wan:
        lines += ["", "## Cloud over a WAN (c=1, hard inputs)", "",
                  f"Cloud model served directly: p50 {wan['cloud_direct_p50_ms']:.2f} ms.", "",
                  "| RTT set ms | proxy adds ms (measured) | hard p50 ms | gateway's own cost ms | mixed mean ms |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['rtt_ms']} | {r['proxy_added_ms']:.2f} | {r['hard_p50_ms']:.2f} | "
                  f"{r['gateway_cost_ms']:.2f} | {r['mixed_mean_ms']:.2f} |" for r in wan["rows"]]
    batching = sections.get("batching")
    if batching:
        lines += ["", f"## Cloud dynamic batching (c={batching['concurrency']}, CloudOnly through the gateway)",
                  "", f"batched (max {batching['max_batch_size']} rows, {batching['batch_wait_ms']} ms): "
                  f"{batching['batched_rps']:.0f} req/s; unbatched: {batching['unbatched_rps']:.0f} req/s; "
                  f"ratio {batching['ratio']:.2f}."]
    breaker = sections.get("breaker")
    if breaker:
        lines += ["", "## Cloud down (connections refused), circuit breaker", "",
                  f"easy p50 {breaker['easy_p50_ms']:.2f} ms; hard p50 with a healthy cloud "
                  f"{breaker['hard_healthy_p50_ms']:.2f} ms; cloud cut: {breaker['requests_before_open']} "
                  f"request(s) paid the failure (p50 {fmt(breaker['before_open_p50_ms'])} ms, "
                  f"{', '.join(breaker['reasons_before_open'])}), then `circuit_open` at p50 "
                  f"{fmt(breaker['after_open_p50_ms'])} ms; {breaker['failed']} failed. ({breaker['method']})"]
    switch = sections.get("version_switch")
    if switch:
        lines += ["", "## Version switch under load", "",
                  f"{switch['rate']:g} req/s mixed for {switch['duration_s']:g} s, edge v1 -> v2 -> v1: "
                  f"{switch['requests']} requests, {switch['failures']} failed, p99 {switch['p99_ms']:.2f} ms, "
                  f"max {switch['max_ms']:.2f} ms."]
    routing = sections.get("routing")
    if routing:
        from benchmarks.routing import routing_markdown

        lines += ["", "## Routing quality (digits)", "", routing_markdown(routing)]
    return lines


def rerender(results_json: Path) -> None:
    """Plots and summary.md again from a results.json (after a change to this module)."""
    import json

    from benchmarks.runner import Results

    data = json.loads(results_json.read_text())
    results = Results.from_dict(data)
    out = results_json.parent
    paths = plots(results, out)
    (out / "summary.md").write_text(summary(results, data["targets"], paths))


if __name__ == "__main__":
    import sys

    rerender(Path(sys.argv[1]))
