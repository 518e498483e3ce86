"""Names the runtime's docstring examples use, for pytest's doctest run.

The examples run on a small trained export (the test suite's digits chain)
made once per test process in a temporary folder: ``export_dir`` is that
folder, ``x_val`` / ``y_val`` its labelled validation images, ``static_path``
the same network's static model. Building it
needs TensorFlow; the examples are skipped where it is not installed. The
runtime itself never imports this module.
"""

import pathlib
import sys

import pytest

_TESTS = pathlib.Path(__file__).resolve().parents[2] / "tests"


@pytest.fixture(autouse=True)
def _digits_export_for_examples(request, doctest_namespace, tmp_path_factory):
    item = request.node
    if not isinstance(item, pytest.DoctestItem) or not (
        "export_dir" in item.dtest.docstring or "static_path" in item.dtest.docstring
    ):
        return
    pytest.importorskip("tensorflow")
    pytest.importorskip("sklearn")
    if str(_TESTS) not in sys.path:
        sys.path.insert(0, str(_TESTS))
    from runtime_fixtures import digits_export
    from runtime_fixtures import digits_static

    export = digits_export(tmp_path_factory)
    doctest_namespace.update(
        export_dir=str(export.folder), x_val=export.x_val, y_val=export.y_val
    )
    if "static_path" in item.dtest.docstring:
        doctest_namespace["static_path"] = str(digits_static(tmp_path_factory))
