"""The prediction commands' file loop (:func:`scalear.cli_files.run_in_batches`): input order, skipped inputs,
errors, and writes of several images at once while the model runs."""

from __future__ import annotations

import threading

import pytest

from scalear.cli_files import run_in_batches


def _read(item: int) -> int:
    if item == 3:
        raise KeyError("unreadable")
    return item * 10


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_outcomes_come_in_input_order_with_the_skipped_inputs(batch_size):
    batches = []

    def run(batch):
        batches.append([item for item, _ in batch])
        return [value + 1 for _, value in batch]

    out = list(run_in_batches(list(range(9)), batch_size, _read, run, lambda item, value, result: (value, result),
                              skip=(KeyError,)))
    assert [item for item, _ in out] == list(range(9))
    assert isinstance(out[3][1], KeyError)
    assert all(outcome == (10 * i, 10 * i + 1) for i, outcome in out if i != 3)
    assert [i for b in batches for i in b] == [i for i in range(9) if i != 3]  # 3 never reaches the model
    assert all(len(b) <= batch_size for b in batches)


def test_other_errors_propagate():
    def write(item, value, result):
        if item == 5:
            raise OSError("disk full")
        return result

    with pytest.raises(OSError, match="disk full"):
        list(run_in_batches(list(range(8)), 2, lambda i: i, lambda b: [v for _, v in b], write))
    with pytest.raises(ValueError, match="run returned 0 results for 2 inputs"):
        list(run_in_batches([1, 2], 2, lambda i: i, lambda b: [], write))


def test_several_images_are_written_while_the_model_runs():
    """A write that takes longer than the model does not hold the model up: writes of three consecutive inputs
    (batch 1) are under way together, here each waiting for the other two at a barrier (the loop that kept one
    batch being written could not pass it)."""
    barrier = threading.Barrier(3, timeout=10)

    def write(item, value, result):
        barrier.wait()
        return result

    out = list(run_in_batches([0, 1, 2], 1, lambda i: i, lambda b: [v for _, v in b], write, workers=4))
    assert out == [(0, 0), (1, 1), (2, 2)]
