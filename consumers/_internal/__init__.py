"""The runtime's internals: the engine (attempt path, poll batch, offsets, lanes, held
retries, after-commit jobs, liveness), failure recording and the helpers under them.

Job authors and integrators never import these; their names and signatures change without
notice. The public API is `consumers` itself and its top-level modules (consumers.source,
consumers.job, consumers.dispatch, consumers.failed_jobs, consumers.runtime, ...).
"""
