"""The README's Usage example runs as written (on a slice of MNIST, one epoch)."""

import pathlib
import re

import keras
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist.npz"


def usage_code():
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Usage\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.exists(), reason=f"{MNIST} not found")
def test_usage_example_runs(tmp_path, monkeypatch):
    data = np.load(MNIST)
    # 5,000 images go to calibration, as in the README; 1,000 are left to train.
    subset = (
        (data["x_train"][:6000], data["y_train"][:6000]),
        (data["x_test"][:500], data["y_test"][:500]),
    )
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: subset)
    monkeypatch.chdir(tmp_path)
    code = usage_code()
    assert "epochs=10" in code
    namespace = {}
    exec(code.replace("epochs=10", "epochs=1"), namespace)
    result = namespace["result"]
    assert result.labels.shape == (500,)
    assert set(namespace["chain"].policy.to_dict()) == {"exit_1", "exit_2", "final"}
    # Eight steps of training: well above chance (0.1), far from trained.
    assert (result.labels == subset[1][1]).mean() > 0.2
    assert (tmp_path / "out" / "manifest.json").exists()
