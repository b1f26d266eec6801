"""A lending library: a second application with its own event, command, job and consumer
group, loaded by `outbox` through CONSUMER_MODULES=examples.library.jobs (examples/README.md).

`examples.library.domain` is the write side (what a web app of the library would import);
`examples.library.jobs` declares the group and its job (it imports the domain, so naming
it alone in CONSUMER_MODULES registers everything).
"""
