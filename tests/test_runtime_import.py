"""keras_dynamic.runtime must load and predict with TensorFlow and Keras unimportable."""

import pathlib
import subprocess
import sys
import textwrap

import numpy as np
from runtime_fixtures import digits_export

from keras_dynamic import runtime

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_runtime_runs_without_tensorflow_or_keras(tmp_path_factory, tmp_path):
    export = digits_export(tmp_path_factory)
    np.save(tmp_path / "x.npy", export.x_val[:16])
    script = textwrap.dedent(
        f"""
        import sys
        # None in sys.modules makes any import of these raise ImportError.
        for name in ("tensorflow", "keras", "tf_keras"):
            sys.modules[name] = None
        import numpy as np
        import keras_dynamic.runtime as rt

        chain = rt.load({str(export.folder)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        result = chain.predict(x, mode="sample")
        batch = chain.predict(x)
        assert (result.labels == batch.labels).all()
        assert chain.backend != "tensorflow", chain.backend
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras") and sys.modules[m] is not None)
        assert not loaded, loaded
        print("labels", " ".join(map(str, result.labels)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    labels = [int(v) for v in done.stdout.split("labels", 1)[1].split()]
    expected = runtime.load(export.folder).predict(export.x_val[:16]).labels
    assert labels == expected.tolist()
