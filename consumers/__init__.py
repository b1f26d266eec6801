"""Consumer runtime and jobs (issue: consumer runtime). Not built yet."""

__all__: list[str] = []
