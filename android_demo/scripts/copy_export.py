"""Copies an export into the Android demo's assets, after checking it with the Python runtime.

    python android_demo/scripts/copy_export.py EXPORT_DIR [--static STATIC.tflite]
        [--samples 24] [--inputs samples.npz] [--assets DIR]

The export is copied byte for byte (manifest.json and every file it lists), then the
copy is loaded with `keras_dynamic.runtime.load`, which checks its schema, paths, sizes,
sha256 and stage signatures; nothing is left in the assets if that fails. The optional
static model (from `converters.export_static`) is copied as ``static.tflite``: the app
times it for comparison. ``samples.trace.json`` is a golden trace
(`keras_dynamic.runtime.trace`) of the sample images with the images themselves, their
true labels, and the Python runtime's decisions under the manifest's policy, which the
app shows next to its own.

Sample images come from ``--inputs`` (an .npz with arrays ``x`` and ``y``) or, for an
export whose input is ``(s, s, 1)``, from the test split of scikit-learn's digits
upsampled to ``s`` (the data of ``./run demo``).

The assets folder is replaced as a whole, and only if it is absent or holds a previous
copy (a manifest.json of this format): the script never deletes anything else.
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np

from keras_dynamic import runtime
from keras_dynamic.runtime import trace
from keras_dynamic.runtime.manifest import FORMAT
from keras_dynamic.runtime.manifest import MANIFEST_NAME
from keras_dynamic.runtime.manifest import read_manifest

DEMO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_ASSETS = DEMO / "app" / "src" / "main" / "assets" / "export"
SAMPLES_NAME = "samples.trace.json"
STATIC_NAME = "static.tflite"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=pathlib.Path, help="export folder (or its manifest.json)")
    parser.add_argument("--static", type=pathlib.Path, help="static .tflite to compare with")
    parser.add_argument("--samples", type=int, default=24, help="sample images to bundle")
    parser.add_argument("--inputs", type=pathlib.Path, help=".npz with arrays x and y")
    parser.add_argument("--assets", type=pathlib.Path, default=DEFAULT_ASSETS)
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error(f"--samples must be >= 1. Received: {args.samples}")
    return args


def sample_images(manifest, inputs_path, count):
    """``(x, y)``: the first ``count`` samples of ``inputs_path`` or of the digits test split."""
    if inputs_path is not None:
        with np.load(inputs_path) as data:
            if "x" not in data or "y" not in data:
                raise SystemExit(f"{inputs_path}: needs arrays 'x' and 'y'; has {sorted(data)}.")
            return data["x"][:count], data["y"][:count]
    specs = manifest["inputs"]
    shape = specs[0]["shape"][1:]
    if len(specs) != 1 or len(shape) != 3 or shape[0] != shape[1] or shape[2] != 1:
        raise SystemExit(
            f"the export's inputs are {[(s['name'], s['shape']) for s in specs]}; the digits "
            "samples fit one (s, s, 1) image input only. Pass --inputs samples.npz."
        )
    from keras_dynamic.data import load_digits_splits

    data = load_digits_splits(image_size=shape[0])
    return data.x_test[:count], data.y_test[:count]


def _is_previous_copy(folder):
    try:
        return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def copy_export(
    export: str | os.PathLike,
    assets: str | os.PathLike,
    *,
    static: str | os.PathLike | None = None,
    samples: int = 24,
    inputs: str | os.PathLike | None = None,
) -> dict:
    """Copies and checks ``export`` into ``assets``; returns the trace document written."""
    folder, manifest, _ = read_manifest(export)
    assets = pathlib.Path(assets)
    if assets.exists() and not _is_previous_copy(assets):
        raise SystemExit(
            f"{assets} exists and is not a copied export (no manifest.json of format "
            f"{FORMAT!r}); remove it yourself or choose another --assets folder."
        )
    assets.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{assets.name}.", dir=assets.parent))
    try:
        shutil.copyfile(folder / MANIFEST_NAME, staging / MANIFEST_NAME)
        for entry in manifest["files"]:
            target = staging.joinpath(*entry["path"].split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder.joinpath(*entry["path"].split("/")), target)
        if static is not None:
            shutil.copyfile(static, staging / STATIC_NAME)
        chain = runtime.load(staging, num_threads=1)
        x, y = sample_images(manifest, inputs, samples)
        document = trace.record_trace(
            chain, x, policies={"manifest": None}, targets=y, include_inputs=True
        )
        trace.write_trace(staging / SAMPLES_NAME, document)
        # mkdtemp makes the folder 0700; give it the mode a plain mkdir would.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        if assets.exists():
            shutil.rmtree(assets)
        staging.rename(assets)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return document


def main(argv=None):
    args = parse_args(argv)
    document = copy_export(
        args.export, args.assets, static=args.static, samples=args.samples, inputs=args.inputs
    )
    exits = document["exits"]
    taken = np.bincount(document["runs"][0]["exit"], minlength=len(exits))
    print(f"copied {args.export} to {args.assets}")
    print(
        f"{document['samples']} samples; the Python runtime takes "
        + ", ".join(f"{name}: {count}" for name, count in zip(exits, taken))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
