"""What pytest-benchmark runs for :mod:`.pytest_timer`: one benchmark per candidate, which that
module's plugin hands in (this file is not part of the test suite)."""


def test_kernel(benchmark, candidate):
    calls = iter(range(1 << 62))  # the call's index: the candidate rotates its inputs by it
    benchmark.name = candidate.name
    benchmark(lambda: candidate.run(next(calls)))
