"""A small trained multi-exit export shared by the runtime tests (not a test module).

A three-exit CNN trained for a few epochs on scikit-learn's digits (8x8, 10
classes), with a skip from the first block into the last one so the stage-1
tensor crosses exit 2, exported with `converters.export_stages`. Built once
per process and per layout, under pytest's base temp folder.
"""

import dataclasses
import functools
import pathlib
import shutil

import numpy as np

NUM_TRAIN = 1200


@dataclasses.dataclass(frozen=True)
class Export:
    folder: pathlib.Path
    x_val: np.ndarray  # (N, 8, 8, 1) float32
    y_val: np.ndarray  # (N,) int64
    keras_logits: dict  # exit name -> (N, 10) Keras logits on x_val

    def copy_to(self, dest):
        """A private copy of the export folder, for tests that modify files."""
        dest = pathlib.Path(dest) / self.folder.name
        shutil.copytree(self.folder, dest)
        return dest


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    return x, data.target.astype(np.int64)


def _model():
    import keras

    import keras_dynamic as kd

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    first = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_1")(inputs)
    exit_1 = kd.layers.EarlyExit(10, name="exit_1")(first)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_2")(first)
    exit_2 = kd.layers.EarlyExit(10, name="exit_2")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_3")(x)
    x = keras.layers.Add(name="skip")([first, x])
    final = kd.layers.EarlyExit(10, hidden_units=16, name="final")(x)
    return keras.Model(inputs, [exit_1, exit_2, final], name="digits_skip")


@functools.cache
def _trained():
    import keras

    x, y = digits()
    model = _model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=[loss] * 3)
    model.fit(x[:NUM_TRAIN], [y[:NUM_TRAIN]] * 3, epochs=10, batch_size=64, verbose=0)
    x_val = x[NUM_TRAIN:]
    logits = model.predict(x_val, verbose=0)
    return model, x_val, y[NUM_TRAIN:], dict(zip(model.output_names, logits))


@functools.cache
def _export(base, layout, fused_model=False):
    from keras_dynamic import converters

    model, x_val, y_val, logits = _trained()
    name = f"digits_{layout}" + ("_fused" if fused_model else "")
    manifest = converters.export_stages(
        model, pathlib.Path(base) / name, layout=layout,
        representative_data=x_val[:64], fused_model=fused_model,
    )
    return Export(pathlib.Path(manifest).parent, x_val, y_val, logits)


def digits_export(tmp_path_factory, layout="signatures"):
    """The trained digits export (cached per process and layout)."""
    return _export(str(tmp_path_factory.getbasetemp()), layout)


def digits_fused_export(tmp_path_factory):
    """The trained digits export carrying its fused CPU model (``fused_model=True``)."""
    return _export(str(tmp_path_factory.getbasetemp()), "signatures", True)


@functools.cache
def _static(base, kind):
    from keras_dynamic import converters

    model = _trained()[0]
    write = converters.export_static if kind == "static" else converters.export_conditional
    return write(model, pathlib.Path(base) / f"digits_{kind}.tflite", verbose=0)


def digits_static(tmp_path_factory):
    """The trained digits network's static model (`export_static`), cached per process."""
    return pathlib.Path(_static(str(tmp_path_factory.getbasetemp()), "static"))


def digits_conditional(tmp_path_factory):
    """The trained digits network as one IF-op model (`export_conditional`)."""
    return pathlib.Path(_static(str(tmp_path_factory.getbasetemp()), "conditional"))


@functools.cache
def _untrained_export(base):
    from keras_dynamic import converters

    manifest = converters.export_stages(_model(), pathlib.Path(base) / "digits_untrained")
    return pathlib.Path(manifest).parent


def untrained_digits_export(tmp_path_factory):
    """The digits architecture with its initial weights: another valid export."""
    return _untrained_export(str(tmp_path_factory.getbasetemp()))


def rehash(folder, relpath="stages.tflite"):
    """Rewrites the manifest's sha256 and size of ``relpath`` to match the file.

    What anyone who can write the folder can do: the manifest is not signed.
    """
    import hashlib
    import json

    folder = pathlib.Path(folder)
    data = (folder / relpath).read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == relpath:
            entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def without_largest_constant(content):
    """A .tflite whose largest constant buffer (a kernel) has lost its data.

    The file still parses and the interpreter builds it; the stage using that
    kernel fails only when run ("Input tensor ... lacks data").
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    largest = max(
        range(len(model.buffers)),
        key=lambda i: 0 if model.buffers[i].data is None else len(model.buffers[i].data),
    )
    model.buffers[largest].data = None
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def signature_using_largest_constant(content):
    """The signature key of the subgraph that reads the largest constant."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    largest = max(
        range(len(model.buffers)),
        key=lambda i: 0 if model.buffers[i].data is None else len(model.buffers[i].data),
    )
    for signature in model.signatureDefs:
        subgraph = model.subgraphs[signature.subgraphIndex]
        if any(tensor.buffer == largest for tensor in subgraph.tensors):
            key = signature.signatureKey
            return key.decode() if isinstance(key, bytes) else key
    raise AssertionError("no signature reads the largest constant")
