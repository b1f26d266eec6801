"""`make demo`: a scripted business day on a fresh database, then what it wrote.

`main.py` runs the day; the other modules are its parts (consumers, scheduler, web,
campaigns, exports, profiles, webhooks).
"""

from pipeline.demo.main import run_demo

__all__ = ["run_demo"]
