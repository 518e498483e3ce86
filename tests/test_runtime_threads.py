"""One chain shared by 8 threads gives every thread its single-threaded answers."""

import threading

import numpy as np
import pytest
from runtime_fixtures import digits_export

from keras_dynamic import runtime
from keras_dynamic.runtime.policy import softmax

NUM_THREADS = 8
ROUNDS = 6


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return digits_export(tmp_path_factory)


def _mixed_policy(chain, x):
    """Thresholds that send samples out at every exit (batch mode then subsets rows)."""
    values = chain.run_all(x)
    return {
        name: {"kind": "max_softmax",
               "threshold": float(np.quantile(softmax(values[name]).max(1), q))}
        for name, q in (("exit_1", 0.7), ("exit_2", 0.4))
    }


def _calls(n, mode):
    """(start, stop) slices of varied sizes: every call resizes the signatures."""
    rng = np.random.default_rng(0)
    sizes = [1, 2, 7, 16, 33] if mode == "batch" else [1, 3, 6]
    calls = []
    for k in range(NUM_THREADS * 5):
        size = sizes[k % len(sizes)]
        start = int(rng.integers(0, n - size))
        calls.append((start, start + size))
    return calls


def _same(result, expected):
    return (
        np.array_equal(result.labels, expected.labels)
        and np.array_equal(result.exit_index, expected.exit_index)
        and np.array_equal(result.probabilities, expected.probabilities)
    )


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_threads_sharing_one_chain_get_the_single_threaded_answers(export, mode):
    chain = runtime.load(export.folder, num_threads=1)
    x = export.x_val
    policy = _mixed_policy(chain, x)
    calls = _calls(len(x), mode)
    expected = {
        call: chain.predict(x[call[0] : call[1]], mode=mode, policy=policy)
        for call in calls
    }
    assert len({e for r in expected.values() for e in r.exit_index}) == 3
    start = threading.Barrier(NUM_THREADS)
    wrong, errors = [], []

    def work(k):
        start.wait()
        try:
            for _ in range(ROUNDS):
                for call in calls[k:] + calls[:k]:
                    result = chain.predict(x[call[0] : call[1]], mode=mode, policy=policy)
                    if not _same(result, expected[call]):
                        wrong.append(call)
        except Exception as e:  # noqa: BLE001 - any exception is a failure to report
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(NUM_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = NUM_THREADS * ROUNDS * len(calls)
    assert not errors, f"{len(errors)} of {NUM_THREADS} threads raised: {errors[:3]}"
    assert not wrong, f"{len(wrong)} of {total} calls got wrong answers"


def test_close_waits_for_a_running_call_and_later_calls_are_refused(export):
    chain = runtime.load(export.folder, num_threads=1)
    x = np.repeat(export.x_val, 4, axis=0)
    results, errors = [], []

    def predict():
        try:
            results.append(chain.predict(x, mode="sample"))
        except ValueError as e:
            errors.append(e)

    thread = threading.Thread(target=predict)
    thread.start()
    chain.close()
    thread.join()
    # Either the call ran to the end before close, or it started after it
    # and was refused; never a crash or a half-run result.
    if results:
        assert results[0].labels.shape == (len(x),)
    else:
        assert "closed" in str(errors[0])
    with pytest.raises(ValueError, match="is closed"):
        chain.predict(x[:1])
