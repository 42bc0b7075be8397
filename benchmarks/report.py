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

    def figure(system: str, traffic: str, level: int, name: str) -> float | None:
        return _median(find(points, system, traffic, "c", level), name)

    # Against a plain HTTP server of the edge model alone.
    r = ratio(figure(JOINT, "easy", 1, "p50_ms"), figure(PLAIN, "easy", 1, "p50_ms"))
    add("easy p50 at c=1, jointserve / plain HTTP", "<= 1.2x", r, r is not None and r <= 1.2, "x")
    r = ratio(figure(JOINT, "easy", 8, "throughput_rps"), figure(PLAIN, "easy", 8, "throughput_rps"))
    add("easy throughput at c=8, jointserve / plain HTTP", ">= 1.0x", r, r is not None and r >= 1.0, "x")
    r = ratio(figure(JOINT, "easy", 1, "p99_ms"), figure(PLAIN, "easy", 1, "p99_ms"))
    add("easy p99 at c=1, jointserve / plain HTTP", "<= 3x", r, r is not None and r <= 3, "x")
    # Ahead of the hand-wired two services on every hot-path figure.
    for traffic, level, name, better in (("easy", 1, "p50_ms", "lower"), ("mixed", 1, "p50_ms", "lower"),
                                         ("hard", 1, "p50_ms", "lower"),
                                         ("easy", 8, "throughput_rps", "higher"),
                                         ("mixed", 8, "throughput_rps", "higher")):
        r = ratio(figure(JOINT, traffic, level, name), figure(SEDNA, traffic, level, name))
        if better == "lower":
            add(f"{traffic} p50 at c={level}, jointserve / Sedna-style", "< 1x", r,
                r is not None and r < 1, "x")
        else:
            add(f"{traffic} throughput at c={level}, jointserve / Sedna-style", "> 1x", r,
                r is not None and r > 1, "x")
    joint_mixed = _best(points, JOINT, "mixed")
    naive_mixed = _best(points, NAIVE, "mixed")
    r = ratio(joint_mixed, naive_mixed)
    add("mixed throughput (best concurrency), jointserve / naive Ray Serve", ">= 3x", r,
        r is not None and r >= 3, "x")
    for row in sections.get("wan", {}).get("rows", []):
        if row["rtt_ms"] == 0:
            continue
        own, calibrated = _wan_costs(row)
        cost, how = ((own, "the cloud's p50 over the same link") if own is not None else
                     (calibrated, "measured network and cloud serving time"))  # older runs
        add(f"hard p50 at RTT {row['rtt_ms']} ms minus {how} (the gateway's own cost)",
            "<= 2 ms", cost, cost <= 2, " ms")
    batching = sections.get("batching", {})
    r = batching.get("ratio")  # the compute-heavy cloud model's (scenarios.batching)
    add("heavy cloud model throughput at c=32, batching on / off", ">= 3x", r,
        r is not None and r >= 3, "x")
    added = sections.get("breaker", {}).get("added_ms_breaker_open")
    add("added latency of a hard request with the breaker open (vs easy)", "<= 1 ms", added,
        added is not None and added <= 1, " ms")
    switch = sections.get("version_switch", {})
    failures = switch.get("failures")
    add("failed requests: 3 edge + 1 cloud version switches under c=8, one gateway replica", "0",
        None if failures is None else float(failures), failures == 0)
    killed = sections.get("replica_killed", {})
    for label, what in (("gateway", "one of two gateway replicas"), ("cloud", "the cloud replica")):
        failures = killed.get(label, {}).get("failures")
        add(f"failed requests: {what} SIGKILLed under c=8", "0",
            None if failures is None else float(failures), failures == 0)
    memory = sections.get("memory", {})
    pss = memory.get("jointserve_pss_mib")
    add("PSS of the embedded digits stack (jointserve serve)", "<= 819 MiB", pss,
        pss is not None and pss <= 819, " MiB")
    gone = sections.get("deletion", {}).get("gone_s")
    add("a deleted InferenceModel's route answers 404 after", "<= 5 s", gone,
        gone is not None and gone <= 5, " s")
    routing = sections.get("routing", {})
    best = routing.get("best_policy")
    pgr = _pgr_at(routing, best, "0.2") if best else None
    add(f"PGR at 20% offload, best policy ({best})", ">= 0.9", pgr, pgr is not None and pgr >= 0.9)
    return out


def _median(point: Point | None, figure: str) -> float | None:
    return point.median(figure) if point else None


def _wan_costs(row: dict[str, Any]) -> tuple[float | None, float]:
    """(the gateway's own cost against the cloud over the same link, the calibrated
    estimate) of one WAN row; runs before 2026-12-08 measured only the second, under the
    first's key."""
    if "cloud_over_link_p50_ms" not in row:
        return None, row["gateway_cost_ms"]
    return row["gateway_cost_ms"], row["calibrated_cost_ms"]


def _wan_row(row: dict[str, Any]) -> str:
    own, calibrated = _wan_costs(row)
    return (f"| {row['rtt_ms']} | {row['proxy_added_ms']:.2f} | "
            f"{_ms(row.get('cloud_over_link_p50_ms'))} | {row['hard_p50_ms']:.2f} | {_ms(own)} | "
            f"{_ms(calibrated)} | {row['mixed_mean_ms']:.2f} |")


def _ms(value: float | None) -> str:
    """A figure in ms, or n/a where an older run did not measure it."""
    return "n/a" if value is None else f"{value:.2f}"


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
    if all("cloud_over_link_p50_ms" in r for r in rows):
        ax.plot(rtts, [r["cloud_over_link_p50_ms"] for r in rows], "^-",
                label="cloud model over the same link, no gateway (p50)")
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
                  "The gateway's own cost is the hard p50 minus the cloud's p50 over the same "
                  "link; the calibrated estimate subtracts the proxy's measured added latency and "
                  "the cloud at RTT 0 instead.", "",
                  "| RTT set ms | proxy adds ms (measured) | cloud over the link p50 ms | hard p50 ms "
                  "| gateway's own cost ms | calibrated estimate ms | mixed mean ms |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_wan_row(r) for r in wan["rows"]]
    batching = sections.get("batching")
    if batching:
        lines += _batching_lines(batching, floor)
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
        steps = ", ".join(f"{step['model']} -> {step['to']}" for step in switch.get("switches", []))
        lines += ["", "## Version switches under load", "",
                  f"c={switch.get('concurrency', '?')} mixed on `digits` (one gateway replica) for "
                  f"{switch['duration_s']:g} s, {steps}: {switch['requests']} requests, "
                  f"{switch['failures']} failed, p99 {switch['p99_ms']:.2f} ms, max {switch['max_ms']:.2f} ms."]
    killed = sections.get("replica_killed")
    if killed:
        lines += ["", "## Replicas SIGKILLed under load (c=8)", ""]
        for label, what in (("gateway", "one of two gateway replicas of `digits-two`"),
                            ("cloud", "the cloud replica, under CloudOnly traffic")):
            row = killed.get(label)
            if row:
                lines.append(f"- {what}: {row['requests']} requests, {row['failures']} failed, "
                             f"p99 {row['p99_ms']:.2f} ms, max {row['max_ms']:.2f} ms.")
    memory = sections.get("memory")
    if memory:
        top = ", ".join(f"{name} {mib:.0f}" for name, mib in list(memory["jointserve_by_name"].items())[:8])
        lines += ["", "## Memory", "",
                  f"`jointserve serve` on the digits example, idle: {memory['jointserve_pss_mib']:.0f} MiB "
                  f"PSS ({memory['jointserve_rss_mib']:.0f} MiB RSS) in {memory['jointserve_processes']} "
                  f"processes; plain HTTP server: {memory['plain_pss_mib']:.0f} MiB PSS. "
                  f"Largest (PSS MiB by process name): {top}."]
    deletion = sections.get("deletion")
    if deletion:
        lines += ["", f"A deleted InferenceModel's route answered 404 {deletion['gone_s']:.2f} s after "
                  "its file was removed."]
    routing = sections.get("routing")
    if routing:
        from benchmarks.routing import routing_markdown

        lines += ["", "## Routing quality (digits)", "", routing_markdown(routing)]
    return lines


def _batching_lines(batching: dict[str, Any], floor: dict[str, Any] | None) -> list[str]:
    """One row per cloud model: its in-process cost, then req/s with batching on and off."""
    lines = ["", f"## Cloud dynamic batching (c={batching['concurrency']}, CloudOnly through the gateway)",
             "", f"Batched: at most {batching['max_batch_size']} rows, {batching['batch_wait_ms']} ms wait.", "",
             "| cloud model | in-process call (1 thread) | batched req/s | unbatched req/s | ratio |",
             "|---|---|---|---|---|"]
    if "digits_ratio" not in batching:  # a results.json from before the heavy model: digits only
        return lines + [_batching_row("digits-cloud", _digits_cost(floor), batching["batched_rps"],
                                      batching["unbatched_rps"])]
    call = batching["heavy_call_ms"]
    heavy_cost = f"{call['batch1_ms']:.2f} ms; batch of 16: {call['batch16_ms_per_row']:.3f} ms per row"
    # The heavy model is timed by scenarios.batching with jointserve up but idle; the digits
    # model in the floor step, before any system started.
    return lines + [
        _batching_row(f"{batching['model']} (compute-heavy)", heavy_cost, batching["batched_rps"],
                      batching["unbatched_rps"]),
        _batching_row("digits-cloud", _digits_cost(floor), batching["digits_batched_rps"],
                      batching["digits_unbatched_rps"])]


def _batching_row(model: str, cost: str, batched_rps: float, unbatched_rps: float) -> str:
    return (f"| {model} | {cost} | {batched_rps:.0f} | {unbatched_rps:.0f} | "
            f"{fmt(ratio(batched_rps, unbatched_rps))} |")


def _digits_cost(floor: dict[str, Any] | None) -> str:
    if not floor:
        return "n/a"
    return f"{floor['cloud_us']:.1f} µs; batch of 32: {floor['cloud_batch32_us_per_row']:.2f} µs per row"


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
