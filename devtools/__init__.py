"""Developer tools: the demo, the benchmarks and the proofs under faults; no service imports them.

* ``fleet demo`` (:mod:`devtools.demo`): the whole stack on one box, supervised.
* ``fleet bench ingest|sim|live|analytics|faults`` (``devtools.bench_*``), with the
  receipt-aware load generator (:mod:`devtools.loadgen`); ``fleet bench faults`` kills
  every process of the write path with SIGKILL under load and audits what was lost.
* :mod:`devtools.processes`: the one child-process handle, shared with the tests.
"""
