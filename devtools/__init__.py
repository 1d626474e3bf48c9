"""Developer tools: proving the platform's guarantees under faults.

``fleet bench faults`` (:mod:`devtools.bench_faults`) kills every process of the write
path with SIGKILL while receipt-aware devices publish, then counts what was lost.
"""
