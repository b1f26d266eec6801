"""Infrastructure that tests, benches and library users import: engines per backend
(`infra.db`), migrations (`infra.migrate`), the embedded broker launcher (`infra.broker`),
database admin helpers (`infra.dbadmin`), structured logs with redaction (`infra.logs`).

Not the composition root: it imports only `outbox` and `migrations`, never `pipeline`.
"""

__all__: list[str] = []
