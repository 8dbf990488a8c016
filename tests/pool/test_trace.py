"""Per-request traces: the CSV format, its errors, and the shipped synthetic trace."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from imagefleet.pool.trace import SHIPPED, Request, Synthetic, TraceError, read_requests, synthetic, write_requests


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def test_the_shipped_trace_is_the_generator_of_seed_0() -> None:
    assert read_requests(SHIPPED) == synthetic(0)


def test_the_synthetic_trace_has_the_asked_shape() -> None:
    shape = Synthetic()
    requests = synthetic(0)
    rate = len(requests) / shape.duration_seconds
    assert rate == pytest.approx(shape.rate, rel=0.05)
    models = Counter(r.model for r in requests)
    assert len(models) == 80
    # Zipf: the most popular checkpoint's share is 1 / sum(1 / k^1.1) over 80 ranks (24.2 %).
    top = models.most_common(1)[0][1] / len(requests)
    expected = 1 / sum(1 / k ** shape.zipf_exponent for k in range(1, 81))
    assert top == pytest.approx(expected, rel=0.15)
    with_lora = [r for r in requests if r.adapters]
    assert len(with_lora) / len(requests) == pytest.approx(0.10, abs=0.015)
    assert all(len(r.adapters) == 1 and 0 <= int(r.adapters[0].removeprefix("lora-")) < 500 for r in with_lora)
    # An adapter always rides on the same checkpoint.
    bases = {r.adapters[0]: r.model for r in with_lora}
    assert all(bases[r.adapters[0]] == r.model for r in with_lora)
    assert {r.steps for r in requests} <= set(range(30, 41)) and {r.images for r in requests} <= set(range(1, 9))
    assert synthetic(1) != synthetic(0) and synthetic(1) == synthetic(1)


def test_any_csv_with_the_columns_reads_extra_columns_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "user,time,model,adapters,steps,images\n"
                           "u1,0,my-ckpt,,30,1\nu2,1.5,my-ckpt,pixel;ink,40,8\n")
    assert read_requests(path) == [Request(0.0, "my-ckpt", (), 30, 1),
                                   Request(1.5, "my-ckpt", ("pixel", "ink"), 40, 8)]


def test_an_adapter_count_is_adapters_never_seen_again(tmp_path: Path) -> None:
    path = write(tmp_path, "time,model,adapter_count,steps,images\n0,a,2,30,1\n1,a,2,30,1\n2,a,0,30,1\n")
    first, second, third = read_requests(path)
    assert len(first.adapters) == 2 and len(second.adapters) == 2 and third.adapters == ()
    assert not set(first.adapters) & set(second.adapters)


def test_write_and_read_back(tmp_path: Path) -> None:
    requests = synthetic(3)[:50]
    path = tmp_path / "out.csv"
    write_requests(path, requests)
    assert read_requests(path) == requests


@pytest.mark.parametrize(("text", "message"), [
    ("time,model,steps,images\n0,a,30,1\n", "adapters (or adapter_count)"),
    ("time,model,adapters,steps,images\nsoon,a,,30,1\n", "row 2: `time` must be a number"),
    ("time,model,adapters,steps,images\n5,a,,30,1\n4,a,,30,1\n", "row 3: `time` 4 is before the previous row's 5"),
    ("time,model,adapters,steps,images\n0,a,,0,1\n", "row 2: `steps` and `images` must be >= 1"),
    ("time,model,adapters,steps,images\n0,,,30,1\n", "row 2: `model` is empty"),
    ("time,model,adapter_count,steps,images\n0,a,x,30,1\n", "row 2: `adapter_count` must be a whole number"),
    ("time,model,adapters,steps,images\n", "no requests"),
])
def test_a_bad_trace_names_the_row_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_requests(write(tmp_path, text))
