"""`bench --report DIR`: the run's summary and series as JSON, and PNGs people can look at.

- the standard run: `latency.png` (Betalt → receipt, steady and burst), `throughput.png`
  (events/s over time: the anchor, the enrich stage alone, the whole worker) and
  `window.png` (Xledger requests per payment, and p99, against the post batch window);
- `--month-start`: `month_start.png` (the last outcome after the last and the first
  event, requests per payment beside the floor, peak RSS, CPU per event beside the
  two-hop anchor's double, as events and tenants grow; issue 29's limits as grey lines)
  and `month_start_receipts.png`;
- `--scaling`: `scaling.png` (events/s and CPU µs per event per worker, 1 → N workers).

matplotlib is a development dependency (`.[dev]`), imported only here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(directory: Path, summary: dict[str, Any], series: dict[str, Any]) -> list[Path]:
    """Writes summary.json, series.json and the plan's PNGs into `directory`; returns the
    paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display

    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "summary.json", directory / "series.json"]
    written[0].write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", "utf-8")
    written[1].write_text(json.dumps(series, ensure_ascii=False) + "\n", "utf-8")
    plan = summary.get("plan", "standard")
    if plan == "month-start":
        written += [_month_start(directory, summary), _month_start_receipts(directory, series)]
    elif plan == "scaling":
        written.append(_scaling(directory, summary, series))
    else:
        written += [
            _latency(directory, summary, series),
            _throughput(directory, summary, series),
            _window(directory, summary),
        ]
    return written


def _title(summary: dict[str, Any]) -> str:
    load = summary.get("loadavg_start", ["?"])[0], summary.get("loadavg_end", ["?"])[0]
    return f"{summary.get('broker', '?')}, load {load[0]} → {load[1]} (1 min)"


def _stairs(ax: Any, rates: list[float], bin_s: float, label: str) -> None:
    """A rate per bin, drawn as the bins it holds for."""
    if rates:
        ax.stairs(rates, [i * bin_s for i in range(len(rates) + 1)], label=label, linewidth=1.5)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _latency(directory: Path, summary: dict[str, Any], series: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    runs = {k: v for k, v in series.get("latency_ms", {}).items() if v}
    fig, axes = plt.subplots(len(runs) or 1, 1, figsize=(8, 2.8 * max(1, len(runs))))
    axes = axes if len(runs) > 1 else [axes]
    for ax, (name, lat) in zip(axes, sorted(runs.items()), strict=False):
        seconds = [x / 1000 for x in lat]
        ax.hist(seconds, bins=60, color="#4c72b0")
        for q, style in ((0.5, "--"), (0.99, ":")):
            at = seconds[min(len(seconds) - 1, int(q * len(seconds)))]
            ax.axvline(at, color="black", linestyle=style, label=f"p{round(q * 100)} {at:.2f} s")
        ax.set_title(f"Betalt → receipt, {name} ({len(lat):,} payments)")
        ax.set_xlabel("seconds")
        ax.set_ylabel("payments")
        ax.legend()
    fig.suptitle(_title(summary), fontsize=9)
    return _save(fig, directory / "latency.png")


def _throughput(directory: Path, summary: dict[str, Any], series: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    bin_s = series.get("rate_bin_s", 1.0)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, rates in series.get("events_per_s", {}).items():
        _stairs(ax, rates, bin_s, name)
    ax.set_xlabel(f"seconds since the first output ({bin_s} s bins)")
    ax.set_ylabel("events/s (broker times of outputs)")
    ax.set_title(f"The same burst: plain aiokafka beside the worker — {_title(summary)}")
    ax.set_yscale("log")
    ax.legend()
    return _save(fig, directory / "throughput.png")


def _window(directory: Path, summary: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    rows = summary.get("window_tradeoff", [])
    windows = [r["window_s"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    lines = ax.plot(
        windows, [r["requests_per_payment"] for r in rows], "o-", label="requests per payment"
    )
    burst = summary.get("xledger_requests_per_payment", {}).get("burst")
    if burst is not None:
        lines.append(ax.axhline(burst, color="grey", linestyle="--", label="burst (its window)"))
    ax.set_xlabel("post batch window (s)")
    ax.set_ylabel("Xledger requests per posted payment")
    ax.set_ylim(bottom=0)
    p99 = ax.twinx()
    lines += p99.plot(
        windows,
        [(r["p99_ms"] or 0) / 1000 for r in rows],
        "s:",
        color="#c44e52",
        label="Betalt → receipt p99",
    )
    p99.set_ylabel("Betalt → receipt p99 (s)", color="#c44e52")
    p99.set_ylim(bottom=0)
    rate = summary.get("setup", {}).get("steady_rate", "?")
    ax.set_title(f"Steady {rate:g} events/s: the window's trade-off" if rate != "?" else "")
    ax.legend(handles=lines, labels=[str(line.get_label()) for line in lines], loc="lower left")
    fig.suptitle(_title(summary), fontsize=9)
    return _save(fig, directory / "window.png")


def _month_start(directory: Path, summary: dict[str, Any]) -> Path:
    """Four figures, each along the events (top: a line per tenant count) and along the
    tenants (bottom, at the most events), with issue 29's limit or floor beside each."""
    import matplotlib.pyplot as plt

    rows = summary["month_start"]
    # (key, label, a second key drawn dashed beside it, a limit drawn as a grey line)
    figures: tuple[tuple[str, str, str | None, float | None], ...] = (
        (
            "last_outcome_after_last_event_s",
            "last outcome after the last event (s)\n(dotted: after the first)",
            "to_last_outcome_s",
            20.0,
        ),
        (
            "requests_per_payment",
            "Xledger requests per payment\n(dashed: the floor, 2 × tenants / payments)",
            "requests_floor_per_payment",
            0.02,
        ),
        ("worker_rss_mb", "worker peak RSS (MB)", None, 250.0),
        (
            "worker_cpu_us_per_event",
            "worker CPU µs per event\n(dashed: the two-hop anchor's × 2)",
            "two_hop_anchor_cpu_us_per_event",
            None,
        ),
    )
    fig, axes = plt.subplots(2, len(figures), figsize=(4.2 * len(figures), 7))
    most_events = max(r["events"] for r in rows)
    most_tenants = max(r["tenants"] for r in rows)
    along_tenants = sorted(
        (r for r in rows if r["events"] == most_events), key=lambda r: r["tenants"]
    )
    for col, (key, label, beside, limit) in enumerate(figures):
        scale = 2 if beside == "two_hop_anchor_cpu_us_per_event" else 1
        style = ":" if beside == "to_last_outcome_s" else "--"
        for i, tenants in enumerate(sorted({r["tenants"] for r in rows})):
            line = sorted((r for r in rows if r["tenants"] == tenants), key=lambda r: r["events"])
            xs = [r["events"] for r in line]
            axes[0][col].plot(
                xs, [r.get(key) for r in line], "o-", color=f"C{i}", label=f"{tenants} ten."
            )
            if beside:
                axes[0][col].plot(
                    xs, [_times(r.get(beside), scale) for r in line], style, color=f"C{i}"
                )
        xs = [r["tenants"] for r in along_tenants]
        axes[1][col].plot(xs, [r.get(key) for r in along_tenants], "o-", color="C0")
        if beside:
            axes[1][col].plot(
                xs, [_times(r.get(beside), scale) for r in along_tenants], style, color="C0"
            )
        for r in rows:  # a point measured as it stood at its deadline says so
            if r.get("incomplete") and r.get(key) is not None:
                axes[0][col].annotate("incomplete", (r["events"], r[key]), fontsize=7)
                if r["events"] == most_events:
                    axes[1][col].annotate("incomplete", (r["tenants"], r[key]), fontsize=7)
        axes[0][col].set_xlabel("events (all Betalt, at once)")
        axes[1][col].set_xlabel(f"tenants ({most_events:,} events)")
        for row in (0, 1):
            ax = axes[row][col]
            ax.set_ylabel(label, fontsize=8)
            if limit is not None:
                ax.axhline(limit, color="grey", linewidth=0.8, label="issue 29's limit")
            ax.set_ylim(bottom=0)
        axes[0][col].legend(fontsize=7)
    setup = summary.get("setup", {})
    profiled = [name for name in ("py_spy", "tracemalloc") if setup.get(name)]
    note = f" — profiled ({', '.join(profiled)}): not the worker's own figures" if profiled else ""
    fig.suptitle(
        f"Month start, {most_tenants} tenants' registers loaded — {_title(summary)}{note}",
        fontsize=10,
    )
    return _save(fig, directory / "month_start.png")


def _times(value: float | None, scale: int) -> float | None:
    return value * scale if value is not None else None


def _month_start_receipts(directory: Path, series: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    bin_s = series.get("rate_bin_s", 1.0)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, rates in series.get("receipts_per_s", {}).items():
        _stairs(ax, rates, bin_s, name)
    ax.set_xlabel("seconds since the first receipt")
    ax.set_ylabel("receipts/s")
    ax.set_title("Month start: receipts over time")
    ax.legend()
    return _save(fig, directory / "month_start_receipts.png")


def _scaling(directory: Path, summary: dict[str, Any], series: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    rows = summary["scaling"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    workers = [r["workers"] for r in rows]
    axes[0].plot(workers, [r["enrich_events_per_s"] for r in rows], "o-")
    axes[0].set_xlabel("workers")
    axes[0].set_ylabel("enrich events/s (all workers)")
    axes[0].set_xticks(workers)
    axes[0].set_ylim(bottom=0)
    width = 0.8 / max(workers)
    for r in rows:
        for i, (cpu, parts) in enumerate(
            zip(r["cpu_us_per_event_per_worker"], r["partitions_per_worker"], strict=True)
        ):
            x = r["workers"] + (i - (r["workers"] - 1) / 2) * width
            axes[1].bar(x, cpu or 0, width * 0.9, color=f"C{i}")
            axes[1].text(x, (cpu or 0), f"{parts}p", ha="center", va="bottom", fontsize=8)
    axes[1].set_xticks(workers)
    axes[1].set_xlabel("workers (bar per worker; Np: partitions held)")
    axes[1].set_ylabel("CPU µs per event, per worker")
    bin_s = series.get("rate_bin_s", 1.0)
    for name, rates in series.get("enrich_per_s", {}).items():
        _stairs(axes[2], rates, bin_s, name)
    axes[2].set_xlabel("seconds since the first enrich output")
    axes[2].set_ylabel("enrich outputs/s")
    axes[2].legend()
    cores = summary.get("cores")
    fig.suptitle(
        f"Scaling on {summary.get('brokers')} broker(s), {cores} cores — {_title(summary)}",
        fontsize=10,
    )
    return _save(fig, directory / "scaling.png")
