"""The fused CPU model an export may carry beside its stages (``fused_model=True``).

On a CPU one `invoke` of the IF-op model (`conditional.py`) runs a sample to
its exit without the chain's per-stage calls and copies; GPU and NPU
accelerators refuse the `IF` op and take the stages. An export that carries
both lets the runtime pick: the fused model in sample mode on the CPU under
max-softmax thresholds, the stages everywhere else (docs/MANIFEST.md,
"fused"; BENCHMARKS.md, "The runtime against the single conditional model").
"""

import os

import numpy as np

from keras_dynamic.converters import conditional
from keras_dynamic.converters import parity
from keras_dynamic.runtime.files import atomic_write_bytes
from keras_dynamic.runtime.single_model import NEVER
from keras_dynamic.runtime.single_model import SingleModel

FUSED_FILE = "fused.tflite"
# The only decision an IF op can take from a threshold input (conditional.py).
DECISION = "max_softmax"
QUANTIZE_OPTIONS = (None, "float16")


def check_options(fused_model, quantize):
    """Refuses a `fused_model` argument that `export_stages` cannot honour."""
    if not isinstance(fused_model, bool):
        raise TypeError(
            f"`fused_model` must be True or False. Received: fused_model={fused_model!r}"
        )
    if fused_model and quantize not in QUANTIZE_OPTIONS:
        raise ValueError(
            f"fused_model=True writes float32 or float16 IF-op models; quantize="
            f"{quantize!r} is not supported for it (its branches would need their own "
            "calibration). Export the int8 stages without fused_model."
        )


def check_model(model, plans):
    """Refuses, before any conversion, a model the IF ops cannot express."""
    conditional.check_exits_only(model, plans, "export_stages(fused_model=True)")


def write(plans, folder, quantize):
    """Converts the IF-op model of `plans` into `folder`; returns the manifest entry."""
    content = conditional.conditional_content(plans, folder, quantize=quantize)
    atomic_write_bytes(os.path.join(folder, FUSED_FILE), content)
    exits = [p.exit_name for p in plans if p.exit_name is not None]
    return {
        "file": FUSED_FILE,
        "signature": conditional.SIGNATURE,
        "exits": exits[:-1],
        "decision": DECISION,
    }


def check_parity(plans, folder, inputs, reference, quantize):
    """Runs the fused model down every exit path against the Keras `reference`.

    For exit k the thresholds open exit k and close every earlier one, so each
    sample leaves there; its values must match Keras as the stages' do and
    the model must report exit k. Returns ``{exit name: largest error}``.
    """
    model = SingleModel(os.path.join(folder, FUSED_FILE))
    names = [p.exit_name for p in plans if p.exit_name is not None]
    n = len(next(iter(inputs.values())))
    got = {}
    for k, name in enumerate(names):
        thresholds = np.full(len(names) - 1, NEVER, np.float32)
        if k < len(thresholds):
            thresholds[k] = 0.0
        model.set_threshold_values(thresholds)
        rows = []
        for i in range(n):
            values, exit_index = model.run({key: v[i : i + 1] for key, v in inputs.items()})
            if int(exit_index[0]) != k:
                raise parity.ParityError(
                    f"The fused model took exit {int(exit_index[0])} for sample {i} where "
                    f"its thresholds open exit {k} ({name!r}) first. Nothing was written."
                )
            rows.append(values[0])
        got[name] = np.stack(rows)
    return parity.check_exits(plans, reference, {"fused": got}, quantize)


__all__ = ["FUSED_FILE", "DECISION", "check_options", "check_model", "write", "check_parity"]
