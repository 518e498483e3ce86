"""Measuring an export: the chain against the static and the single conditional model.

`benchmark` times, in one process and in interleaved rounds (so that a busy
machine slows every model alike):

* latency per sample at batch 1, for each thread count: the chain under its
  policy and with no early exit (as `load` runs it: on the export's fused CPU
  model where it carries one that is faster here, and then also on its stages
  alone, ``chain_stages``), and, where given, the static model and the
  conditional (IF-op) model, the latter also with no early exit: the same ops
  as the chain with none, so ``no_exit_over_conditional`` is the cost of
  splitting alone (``no_exit_over_static`` adds the exit heads' own cost);
* throughput at each batch size (batch mode: samples that exit leave the
  batch), at the first thread count;
* peak resident memory of each, each loaded and run in a fresh process.

Mean latencies are the median over rounds of wall time per sample (the whole
call, Python included); p90 is over the samples of every round, from the
chain's per-sample stage time and the baselines' per-call wall time.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_dynamic.runtime.chain import load
from keras_dynamic.runtime.policy import Policy
from keras_dynamic.runtime.single_model import SingleModel

DEFAULT_THREADS = (1, 2, 4)
DEFAULT_BATCH_SIZES = (1, 8, 64)


def _never(chain):
    return Policy({name: None for name in chain.exit_names})


def _single_times(call, boards):
    times = np.empty(len(boards))
    clock = time.perf_counter
    for i, board in enumerate(boards):
        start = clock()
        call(board)
        times[i] = clock() - start
    return times


def _no_exit_ratios(figures):
    """The chain with no early exit over each baseline (see the module docstring)."""
    for chain in ("chain", "chain_stages"):
        if f"{chain}_no_exit" not in figures:
            continue
        prefix = "" if chain == "chain" else "stages_"
        for baseline in ("conditional_no_exit", "static"):
            if baseline in figures:
                figures[f"{prefix}no_exit_over_{baseline.removesuffix('_no_exit')}"] = (
                    figures[f"{chain}_no_exit"]["mean_us"] / figures[baseline]["mean_us"]
                )


def _chain_times(chain, x, policy):
    start = time.perf_counter()
    result = chain.predict(x, mode="sample", policy=policy)
    return (time.perf_counter() - start) / len(result.labels), result


def _latencies(export_dir, inputs, threads, rounds, baselines, policy, accelerator, fused):
    """One thread count: ``{model: {"mean_us", "p90_us"}}`` plus the chain's result."""
    chain = load(export_dir, num_threads=threads, policy=policy, accelerator=accelerator,
                 fused=fused)
    chains = {"chain": chain}
    if chain.fused_file is not None:
        chains["chain_stages"] = load(
            export_dir, num_threads=threads, policy=policy, accelerator=accelerator, fused=False
        )
    engine = chain.engine_for("sample")
    models = {name: SingleModel(path, num_threads=threads) for name, path in baselines.items()}
    never = _never(chain)
    calls = {}
    for name, model in models.items():
        model.set_thresholds(chain.policy, chain.exit_names)
        calls[name] = model.fast_call()
        if model.kind == "conditional":
            # The same ops as the chain with no early exit, in one invoke.
            model.set_thresholds(never, chain.exit_names)
            calls[f"{name}_no_exit"] = model.fast_call()
            model.set_thresholds(chain.policy, chain.exit_names)
    n = len(next(iter(inputs.values())))
    boards = [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(n)]
    chain_rows = [(f"{name}{suffix}", c, p) for name, c in chains.items()
                  for suffix, p in (("", None), ("_no_exit", never))]
    means = {name: [] for name in (*(row[0] for row in chain_rows), *calls)}
    samples = {name: [] for name in means}
    # Warm-up: allocations, caches, the thread pool.
    for c in chains.values():
        c.predict(inputs, mode="sample")
    for call in calls.values():
        _single_times(call, boards[:8])
    for _ in range(rounds):
        for name, c, p in chain_rows:
            seconds, got = _chain_times(c, inputs, p)
            means[name].append(seconds)
            samples[name].append(got.latency_seconds)
            if name == "chain":
                result = got
        for name, call in calls.items():
            times = _single_times(call, boards)
            means[name].append(times.mean())
            samples[name].append(times)
    figures = {
        name: {
            "mean_us": float(np.median(means[name]) * 1e6),
            "p90_us": float(np.percentile(np.concatenate(samples[name]), 90) * 1e6),
        }
        for name in means
    }
    # The chain with no early exit against a baseline: the IF-op model with no
    # early exit runs exactly the same ops (exit heads included), so their
    # ratio is the cost of splitting alone; the static model runs no heads.
    _no_exit_ratios(figures)
    agreement, labels_of = {}, {"chain": result.labels}
    if "chain_stages" in chains:
        stages = chains["chain_stages"].predict(inputs, mode="sample")
        agreement["chain_stages"] = {
            "labels": float((stages.labels == result.labels).mean()),
            "exits": float((stages.exit_index == result.exit_index).mean()),
        }
    for name, model in models.items():
        labels, exits = [], []
        for board in boards:
            values, exit_index = model.run(board)
            labels.append(int(np.argmax(values)))
            exits.append(-1 if exit_index is None else int(exit_index[0]))
        labels_of[name] = np.array(labels)
        agreement[name] = {"labels": float((labels_of[name] == result.labels).mean())}
        if model.kind == "conditional":
            agreement[name]["exits"] = float((np.array(exits) == result.exit_index).mean())
    for c in chains.values():
        c.close()
    return figures, agreement, result, labels_of, engine


def _throughput(export_dir, inputs, threads, batch_sizes, rounds, baselines, policy, accelerator):
    """``{batch size: {model: samples per second}}`` at one thread count."""
    chain = load(export_dir, num_threads=threads, policy=policy, accelerator=accelerator)
    models = {name: SingleModel(path, num_threads=threads) for name, path in baselines.items()}
    n = len(next(iter(inputs.values())))
    figures = {}
    for size in batch_sizes:
        # Whole batches only, repeating the data where it is shorter than one.
        repeat = -(-size // n)
        data = {k: np.concatenate([v] * repeat)[: max(size, n - n % size)] for k, v in inputs.items()}
        count = len(next(iter(data.values())))
        row = {}
        best = []
        for _ in range(rounds):
            start = time.perf_counter()
            chain.predict(data, batch_size=size)
            best.append(time.perf_counter() - start)
        row["chain"] = count / float(np.median(best))
        for name, model in models.items():
            if model.batch_fixed and size != 1:
                row[name] = None  # IF-op models take batch 1 only
                continue
            model.set_thresholds(chain.policy, chain.exit_names)
            call = model.fast_call()
            batches = [{k: v[i : i + size] for k, v in data.items()} for i in range(0, count, size)]
            call(batches[0])
            best = []
            for _ in range(rounds):
                start = time.perf_counter()
                for batch in batches:
                    call(batch)
                best.append(time.perf_counter() - start)
            row[name] = count / float(np.median(best))
        figures[str(size)] = row
    chain.close()
    return figures


def _memory(export_dir, inputs, threads, baselines):
    """``{model: peak RSS figures}``, each model loaded and run in a fresh process."""
    figures = {}
    small = {k: v[:64] for k, v in inputs.items()}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "inputs.npz")
        np.savez(data, **small)
        for name, path in {"chain": os.fspath(export_dir), **baselines}.items():
            kind = "chain" if name == "chain" else "single"
            done = subprocess.run(
                [sys.executable, "-m", "keras_dynamic.runtime.peak_memory", kind, path, data,
                 str(threads)],
                capture_output=True, text=True, check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"measuring the memory of {name} ({path}) failed:\n{done.stderr[-2000:]}"
                )
            figures[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def benchmark(
    export_dir,
    x,
    *,
    y=None,
    threads=DEFAULT_THREADS,
    batch_sizes=DEFAULT_BATCH_SIZES,
    rounds=3,
    static=None,
    conditional=None,
    policy=None,
    memory=True,
    progress=None,
    accelerator=None,
    fused=None,
) -> dict:
    """Times an export against its baselines; returns a JSON-ready dict.

    Args:
        export_dir: the export folder (or its manifest.json).
        x: inputs as for `Chain.predict` (one array, or a dict name -> array).
        y: optional integer labels: accuracies are reported too.
        threads: interpreter thread counts for the batch-1 latencies.
        batch_sizes: batch sizes for the throughput (at ``threads[0]``).
        rounds: interleaved rounds per measurement.
        static: optional path of the static model (`export_static`).
        conditional: optional path of the IF-op model (`export_conditional`).
        policy: optional policy over the manifest's (a `Policy`, dict or path).
        memory: measure peak memory (one fresh process per model).
        progress: a callable ``progress(step_description)`` called before each
            step (the command line advances its bar with it), or None.
        accelerator: as in `load`, for the chain (the baselines run on the
            CPU interpreter: GPU and NPU delegates refuse the IF op); the
            report's ``placement`` says where each stage ran.
        fused: as in `load`: None lets each thread count's chain keep the
            export's fused CPU model unless the stages timed faster; the report's
            ``engine`` says, per thread count, what ran sample mode, and
            ``chain_stages`` rows time the stages alone beside it.

    Example (``export_dir`` and ``static_path`` from the converters, ``x_val``
    the digits):

    >>> from keras_dynamic.runtime.benchmark import benchmark
    >>> report = benchmark(export_dir, x_val[:50], threads=(1,), batch_sizes=(8,),
    ...                    rounds=1, static=static_path, memory=False)
    >>> sorted(report["latency"]["1"])
    ['chain', 'chain_no_exit', 'no_exit_over_static', 'static']
    """
    baselines = {name: os.fspath(path) for name, path in
                 (("static", static), ("conditional", conditional)) if path is not None}
    say = progress or (lambda step: None)
    with load(export_dir, policy=policy, accelerator=accelerator, fused=False) as chain:
        inputs, n = chain._prepare_inputs(x)
        active_policy = chain.policy
        report = {
            "export": os.fspath(chain.folder),
            "backend": chain.backend,
            "cpu_count": os.cpu_count(),
            "samples": n,
            "policy": active_policy.to_dict(),
            "total_macs": chain.total_macs,
            "baselines": baselines,
            "placement": {name: {"requested": p.requested, "device": p.device,
                                 "fully_accelerated": p.fully_accelerated, "reason": p.reason}
                          for name, p in chain.placement.items()},
            "xnnpack": {name: c.to_dict() for name, c in chain.xnnpack_coverage().items()},
        }
        if n == 0:
            raise ValueError("benchmark needs at least one input sample.")
    report["latency"], report["agreement"], report["engine"] = {}, {}, {}
    for count in threads:
        say(f"latency, {count} thread(s)")
        figures, agreement, result, labels_of, engine = _latencies(
            export_dir, inputs, count, rounds, baselines, active_policy, accelerator, fused
        )
        report["latency"][str(count)] = figures
        # What ran the chain's sample mode: "fused" or "stages" (`Chain.engine_for`).
        report["engine"][str(count)] = engine
        report["agreement"][str(count)] = agreement
    report["exit_share"] = dict(zip(
        result.exit_names,
        np.bincount(result.exit_index, minlength=len(result.exit_names)).astype(float) / n,
    ))
    report["mean_macs"] = float(result.macs.mean())
    if y is not None:
        y = np.asarray(y)
        report["accuracy"] = {name: float((labels == y).mean()) for name, labels in labels_of.items()}
    say(f"throughput, batch sizes {list(batch_sizes)}")
    report["throughput"] = {
        "threads": threads[0],
        "samples_per_second": _throughput(
            export_dir, inputs, threads[0], batch_sizes, rounds, baselines, active_policy,
            accelerator,
        ),
    }
    if memory:
        say("peak memory")
        report["memory"] = _memory(export_dir, inputs, threads[0], baselines)
    return report


__all__ = ["benchmark", "DEFAULT_THREADS", "DEFAULT_BATCH_SIZES"]
