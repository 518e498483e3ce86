"""Exports killed (SIGKILL) at random moments: out_dir is a whole export or absent, and the next export cleans up."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import keras_dynamic as kd
from keras_dynamic import converters
from export_models import chain_model

KILLS = 4
SEED = 20261126

SCRIPT = """
import sys
from keras_dynamic import converters
import keras
sys.path.insert(0, {tests!r})
from export_models import chain_model

keras.utils.set_random_seed(0)
model = chain_model(2, cross_skip=True)
print("ready", flush=True)
sys.stdin.readline()
converters.export_stages(model, sys.argv[1], overwrite=True, verbose=0)
print("done", flush=True)
"""


def _spawn(script, target):
    """Starts an export process; it imports and builds, then waits for `_go`."""
    return subprocess.Popen(
        [sys.executable, str(script), str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _go(process):
    line = process.stdout.readline()
    assert line.strip() == "ready", f"the export script did not start: {line!r}"
    process.stdin.write("go\n")
    process.stdin.flush()


def _whole_or_absent(target):
    if not os.path.lexists(target):
        return "absent"
    assert sorted(os.listdir(target)) == ["manifest.json", "stages.tflite"]
    # load() checks the schema, every file's size and sha256, and signatures.
    chain = kd.runtime.load(target)
    logits = chain.run_all(np.zeros((2, 12, 12, 2), np.float32))
    assert all(np.isfinite(v).all() for v in logits.values())
    return "whole"


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_exports_killed_at_random_moments_leave_a_whole_export_or_none(tmp_path):
    rng = random.Random(SEED)
    script = tmp_path / "export_script.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    parent = tmp_path / "exports"
    parent.mkdir()
    replaced = parent / "replaced"

    # Half replace a previous export, half create a new folder.
    targets = [replaced if k % 2 == 0 else parent / f"fresh_{k}" for k in range(KILLS)]
    waiting = _spawn(script, targets[0])
    # Meanwhile, the export the others replace, and how long one takes.
    start = time.monotonic()
    converters.export_stages(chain_model(2, cross_skip=True), replaced, verbose=0)
    duration = time.monotonic() - start

    outcomes = []
    for kill, target in enumerate(targets):
        # The next process imports TensorFlow while this one exports.
        process, waiting = waiting, (
            _spawn(script, targets[kill + 1]) if kill + 1 < KILLS else None
        )
        _go(process)
        # A fresh process traces everything for the first time: about twice
        # as long as this warm one; a kill after the end finds a whole export.
        delay = rng.uniform(0.0, 2 * duration)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        outcome = _whole_or_absent(target)
        outcomes.append((target.name, round(delay, 2), outcome))
        if target == replaced:
            assert outcome == "whole", outcomes

    left = sorted(n for n in os.listdir(parent) if n.startswith(".keras_dynamic-"))
    converters.export_stages(chain_model(2), parent / "after", verbose=0)
    hidden = [n for n in os.listdir(parent) if n.startswith(".")]
    assert hidden == [], f"left by the kills: {left}; outcomes {outcomes}"
