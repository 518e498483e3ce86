"""``keras-dynamic bench EXPORT_DIR``: latency, throughput and memory against the baselines."""

import json
import sys

from keras_dynamic.cli.data import first
from keras_dynamic.cli.data import read_npz
from keras_dynamic.cli.data import synthetic_inputs
from keras_dynamic.runtime.xnnpack import XnnpackCoverage

NAME = "bench"
HELP = (
    "Time the chain at batch 1 (under its policy and with no early exit), its batch "
    "throughput and peak memory, next to the static model and the single IF-op model "
    "where given; prints a table and optionally writes JSON."
)


def add_arguments(parser):
    parser.add_argument("export_dir", help="export folder (or its manifest.json)")
    parser.add_argument("--data", help=".npz with the inputs ('x' or per input name), "
                        "optionally labels 'y'; default: random inputs (exit rates then "
                        "say nothing about real data)")
    parser.add_argument("--samples", type=int, default=200, help="samples to time (default 200)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4],
                        help="interpreter thread counts (default 1 2 4)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64],
                        help="batch sizes for the throughput (default 1 8 64)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--static", help="the static model (converters.export_static)")
    parser.add_argument("--conditional",
                        help="the single IF-op model (converters.export_conditional)")
    parser.add_argument("--policy", help="policy file applied over the manifest's")
    parser.add_argument("--engine", choices=["auto", "fused", "stages"], default="auto",
                        help="what runs the chain's sample mode where the export carries a "
                             "fused CPU model: auto (the faster, timed at load), fused, or "
                             "stages (default auto)")
    parser.add_argument("--accelerator", choices=["cpu", "gpu", "npu"], default="cpu",
                        help="where the chain's stages run (a stage the accelerator refuses "
                        "falls back to the CPU, reported)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--json", dest="json_out", help="write the report to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check(args):
    for name in ("samples", "rounds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1.")
    for name, values in (("threads", args.threads), ("batch-sizes", args.batch_sizes)):
        if any(v < 1 for v in values):
            raise ValueError(f"--{name} must be positive integers. Received: {values}")


class _StepBar:
    """A tqdm bar over the benchmark's steps (none without tqdm or a terminal)."""

    def __init__(self, total, *, enabled):
        self._bar = None
        self._started = False
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc="bench", unit="step", file=sys.stderr,
                             disable=None)

    def step(self, description):
        """Called as each step starts: the previous one is done."""
        if self._bar is None:
            return
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(description)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._bar is not None:
            if exc_info[0] is None:
                self._bar.update(self._bar.total - self._bar.n)
            self._bar.close()


def format_report(report) -> str:
    """The tables printed after a run."""
    models = [m for m in ("chain", "chain_stages", "conditional", "static", "chain_no_exit",
                          "chain_stages_no_exit", "conditional_no_exit")
              if any(m in row for row in report["latency"].values())]
    lines = [
        f"export: {report['export']} ({report['samples']} samples, backend {report['backend']}, "
        f"{report['cpu_count']} CPUs)",
        "exit share: " + ", ".join(f"{k} {v:.1%}" for k, v in report["exit_share"].items())
        + f"; mean MACs {report['mean_macs']:,.0f} of {report['total_macs']:,}",
    ]
    placed = {p["device"] for p in report["placement"].values()}
    lines.append("placement: " + ", ".join(
        f"{name} on {p['device']}" + ("" if p["device"] == p["requested"]
                                      else f" (asked {p['requested']}: {p['reason']})")
        for name, p in report["placement"].items()) if placed != {"cpu"} or any(
        p["requested"] != "cpu" for p in report["placement"].values())
        else "placement: every stage on the CPU interpreter (XNNPACK)")
    outside = {name: c for name, c in report.get("xnnpack", {}).items() if c["taken"] < c["total"]}
    if outside:
        lines.append("ops outside XNNPACK: " + "; ".join(
            f"{name} {XnnpackCoverage(**{**c, 'left': tuple(c['left'])}).left_ops()} "
            f"({c['taken']} of {c['total']} on XNNPACK)"
            for name, c in outside.items()))
    if "accuracy" in report:
        lines.append("accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in report["accuracy"].items()))
    lines.append("")
    engines = set(report["engine"].values())
    lines.append("latency per sample at batch 1, mean / p90 (us); the chain runs on "
                 + " or ".join(sorted(engines)) + " (chain_stages: on its stages alone)")
    ratios = [r for r in ("no_exit_over_conditional", "no_exit_over_static",
                          "stages_no_exit_over_conditional")
              if any(r in row for row in report["latency"].values())]
    lines.append("threads  " + "  ".join(f"{m:>20}" for m in models)
                 + "".join(f"  {r:>24}" for r in ratios))
    for threads, row in report["latency"].items():
        cells = [f"{row[m]['mean_us']:>10.1f} / {row[m]['p90_us']:>7.1f}" if m in row else "-"
                 for m in models]
        lines.append(f"{threads:>7}  " + "  ".join(f"{c:>20}" for c in cells)
                     + "".join(f"  {row[r]:>23.3f}x" if r in row else f"  {'-':>24}"
                               for r in ratios)
                     + f"  ({report['engine'][threads]})")
    throughput = report["throughput"]
    lines.append("")
    lines.append(f"throughput (samples/s, {throughput['threads']} thread(s))")
    names = list(next(iter(throughput["samples_per_second"].values())))
    lines.append("batch  " + "  ".join(f"{m:>12}" for m in names))
    for size, row in throughput["samples_per_second"].items():
        lines.append(f"{size:>5}  " + "  ".join(
            f"{'-' if row[m] is None else format(row[m], ',.0f'):>12}" for m in names))
    if "memory" in report:
        lines.append("")
        lines.append("peak memory (MiB, fresh process; growth over the loaded runtime)")
        for name, figures in report["memory"].items():
            lines.append(f"  {name:<12} {figures['peak_rss_mib']:>8.1f}  (+{figures['growth_mib']:.1f})")
    for threads, agreement in report["agreement"].items():
        for name, share in agreement.items():
            text = ", ".join(f"{k} {v:.1%}" for k, v in share.items())
            lines.append(f"agreement with the chain, {name}, {threads} thread(s): {text}")
    return "\n".join(lines)


def run(args):
    from keras_dynamic.runtime import load
    from keras_dynamic.runtime.benchmark import benchmark

    _check(args)
    with load(args.export_dir) as chain:
        if args.data:
            x, y = read_npz(args.data, chain.input_names, need_labels=False)
            x = first(x, args.samples)
            y = None if y is None else y[: args.samples]
        else:
            print("bench: no --data given; timing random inputs, whose exit rates say "
                  "nothing about real data.", file=sys.stderr)
            x, y = synthetic_inputs(chain, args.samples), None
    steps = len(args.threads) + 1 + (0 if args.no_memory else 1)
    with _StepBar(steps, enabled=not args.no_progress) as bar:
        report = benchmark(
            args.export_dir, x, y=y, threads=tuple(args.threads),
            batch_sizes=tuple(args.batch_sizes), rounds=args.rounds, static=args.static,
            conditional=args.conditional, policy=args.policy, memory=not args.no_memory,
            progress=bar.step, accelerator=args.accelerator,
            fused={"auto": None, "fused": True, "stages": False}[args.engine],
        )
    report["data"] = args.data
    print(format_report(report))
    if args.json_out:
        from keras_dynamic.runtime.files import atomic_write_text

        atomic_write_text(args.json_out, json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.json_out}")
    return 0
