"""The jobs. Each module declares its jobs with @job; importing it registers them."""

__all__: list[str] = []
