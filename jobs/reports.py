"""generate-pdf-report: a tenant's sales report for a period as a one-page PDF (fpdf2), with
totals, orders by status, a bar chart of them and the top products, delivered through a
signed URL like the exports (the same steps: jobs/exports.py `deliver`).

Every figure comes from `report_figures` (jobs/report_figures.py), which the
tests check against the database. The PDF uses fpdf2's built-in Helvetica, which holds
Latin-1 only: other characters in stored names print as `?`, control characters are
dropped. Its creation date is the request's time, so every attempt writes the same bytes
for the same data.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, select

from consumers import job
from domain.reporting import ExportKind, SalesReportRequested
from domain.schema import sales_exports
from jobs.config import OwnContext
from jobs.export_files import WrittenFile, atomic_target, digest
from jobs.exports import EXPORT_TRIES, ExportTarget, claims, deliver
from jobs.report_figures import ReportFigures, report_figures
from jobs.sales_rows import cell_text

if TYPE_CHECKING:
    from fpdf import FPDF

__all__ = ["generate_pdf_report", "money", "render_report"]

CHART_WIDTH, CHART_BAR_HEIGHT = 120.0, 7.0
_BAR_COLOUR = (52, 101, 164)


def money(cents: int) -> str:
    """12345 -> "123.45", -5 -> "-0.05": the report's one way to show an amount."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{rest:02d}"


def _latin(text: object, limit: int = 80) -> str:
    clean = cell_text(text)[:limit]
    return clean.encode("latin-1", "replace").decode("latin-1")


@job(
    "generate-pdf-report",
    group="exports",
    on=SalesReportRequested,
    tries=EXPORT_TRIES,
    backoff=(30, 300),
    timeout_s=900,
    transactional=False,
)
def generate_pdf_report(event: SalesReportRequested, ctx: OwnContext) -> None:
    """Compute the figures, draw the PDF, record SalesExportReady with its signed URL.
    Tenant and period come from the export's row; the record's must equal them."""

    def write(conn: Connection, target: Path, export: ExportTarget) -> WrittenFile:
        figures = report_figures(conn, export.tenant_id, *export.period)
        requested = conn.execute(
            select(sales_exports.c.requested_at).where(sales_exports.c.id == export.id)
        ).scalar_one()
        with atomic_target(target) as temporary:
            render_report(figures, generated_at=requested).output(str(temporary))
        return WrittenFile(figures.orders, *digest(target))

    deliver(ctx, write, claims(event, ExportKind.PDF))


def render_report(figures: ReportFigures, *, generated_at: datetime) -> FPDF:
    # fpdf2 loads when a report is drawn: importing the job catalog (every worker, every CLI
    # command) should not cost its fonts and image parsers (about 20 MB, 0.3 s).
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_creation_date(generated_at)
    pdf.set_title(_latin(f"Sales report {figures.tenant_id}"))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 18)
    _line(pdf, f"Sales report: {_latin(figures.tenant_name)}", 10)
    pdf.set_font("helvetica", "", 11)
    _line(pdf, f"Tenant {_latin(figures.tenant_id)}, {figures.period_from} to {figures.period_to}")
    _line(pdf, f"Requested {generated_at:%Y-%m-%d %H:%M} UTC")
    pdf.ln(4)
    _heading(pdf, "Totals")
    _line(pdf, f"Orders: {figures.orders:,}")
    _line(pdf, f"Revenue: {money(figures.revenue_cents)}")
    _line(pdf, f"Paid orders: {figures.paid_orders:,}")
    _line(pdf, f"Cancelled orders: {figures.cancelled_orders:,}")
    pdf.ln(4)
    _heading(pdf, "Orders by status")
    for line in figures.by_status:
        _line(pdf, f"{_latin(line.status, 16)}: {line.orders:,} orders, {money(line.total_cents)}")
    pdf.ln(2)
    _bar_chart(pdf, [(_latin(s.status, 16), s.orders) for s in figures.by_status])
    pdf.ln(4)
    _heading(pdf, "Top products (units, orders not cancelled)")
    if not figures.top_products:
        _line(pdf, "No products sold in this period.")
    for rank, product in enumerate(figures.top_products, start=1):
        label = _latin(product.name or product.product_id, 50)
        _line(
            pdf,
            f"{rank}. {label} ({_latin(product.sku, 20)}): {product.quantity:,} units, "
            f"{money(product.revenue_cents)}",
        )
    return pdf


def _line(pdf: FPDF, text: str, height: float = 6) -> None:
    from fpdf.enums import XPos, YPos

    pdf.cell(0, height, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _heading(pdf: FPDF, text: str) -> None:
    pdf.set_font("helvetica", "B", 13)
    _line(pdf, text, 8)
    pdf.set_font("helvetica", "", 11)


def _bar_chart(pdf: FPDF, bars: list[tuple[str, int]]) -> None:
    """Horizontal bars, one per status, scaled to the largest, drawn with rectangles."""
    largest = max((count for _, count in bars), default=0)
    pdf.set_font("helvetica", "", 9)
    left = pdf.l_margin
    for label, count in bars:
        y = pdf.get_y()
        pdf.set_xy(left, y)
        pdf.cell(30, CHART_BAR_HEIGHT, label)
        width = CHART_WIDTH * count / largest if largest else 0
        pdf.set_fill_color(*_BAR_COLOUR)
        if width > 0:
            pdf.rect(left + 32, y + 1, max(width, 0.5), CHART_BAR_HEIGHT - 2, style="F")
        pdf.set_xy(left + 34 + width, y)
        pdf.cell(20, CHART_BAR_HEIGHT, f"{count:,}")
        pdf.set_xy(left, y + CHART_BAR_HEIGHT)
    pdf.set_font("helvetica", "", 11)
