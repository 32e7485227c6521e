"""Invoice PDFs (fpdf2): seller, buyer, number and dates, lines, tax and total.

fpdf2's core fonts speak Latin-1 only; other characters are replaced rather than
failing the download.
"""

from __future__ import annotations

from fpdf import FPDF

from tollway.billing.models import CreditNote, Invoice, InvoiceLine
from tollway.kit.money import Money


def _text(value: object) -> str:
    return str(value).encode("latin-1", "replace").decode("latin-1")


def render_invoice_pdf(
    invoice: Invoice, lines: list[InvoiceLine], credit_notes: list[CreditNote]
) -> bytes:
    parties = invoice.parties
    seller = parties.get("seller", {})
    buyer = parties.get("buyer", {})
    pdf = FPDF(format="A4")
    pdf.set_title(_text(f"Invoice {invoice.number}"))
    pdf.set_author(_text(seller.get("name") or "Tollway"))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, _text(f"Invoice {invoice.number}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    issued = f"{invoice.issued_at:%Y-%m-%d}" if invoice.issued_at else "-"
    pdf.cell(
        0, 6, _text(f"Issued: {issued}    Status: {invoice.status}"), new_x="LMARGIN", new_y="NEXT"
    )
    if invoice.period_start and invoice.period_end:
        pdf.cell(
            0,
            6,
            _text(f"Period: {invoice.period_start:%Y-%m-%d} - {invoice.period_end:%Y-%m-%d}"),
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.ln(4)
    top = pdf.get_y()
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(90, 6, "From", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    for value in (seller.get("name"), seller.get("address"), seller.get("tax_id")):
        if value:
            pdf.multi_cell(90, 5, _text(value), new_x="LMARGIN", new_y="NEXT")
    pdf.set_xy(110, top)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(90, 6, "Bill to", new_x="LEFT", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    for value in (
        buyer.get("name"),
        *(buyer.get("address_lines") or []),
        buyer.get("country"),
        buyer.get("tax_id") and f"Tax id: {buyer['tax_id']}",
        buyer.get("email"),
        buyer.get("organization_id"),
    ):
        if value:
            pdf.cell(90, 5, _text(value), new_x="LEFT", new_y="NEXT")
    pdf.set_x(pdf.l_margin)
    pdf.ln(8)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(120, 7, "Description", border="B")
    pdf.cell(20, 7, "Qty", border="B", align="R")
    pdf.cell(40, 7, "Amount", border="B", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    currency = invoice.currency
    for line in lines:
        pdf.cell(120, 7, _text(line.description[:70]))
        pdf.cell(20, 7, str(line.quantity), align="R")
        pdf.cell(
            40,
            7,
            Money(line.amount_minor, currency).format(),
            align="R",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.ln(3)
    tax_name = parties.get("tax_name") or "Tax"
    rate = f"{invoice.tax_rate_bp / 100:g} %" if invoice.tax_rate_bp else "0 %"
    mode = " included" if invoice.tax_inclusive else ""
    rows = [
        ("Subtotal", Money(invoice.subtotal_minor, currency).format()),
        (f"{tax_name} ({rate}{mode})", Money(invoice.tax_minor, currency).format()),
        ("Total", Money(invoice.total_minor, currency).format()),
    ]
    if invoice.amount_paid_minor:
        rows.append(("Paid", Money(invoice.amount_paid_minor, currency).format()))
    for note in credit_notes:
        rows.append((f"Credit note {note.number}", Money(-note.amount_minor, currency).format()))
    for label, value in rows:
        pdf.set_font("Helvetica", "B" if label == "Total" else "", 10)
        pdf.cell(140, 7, _text(label), align="R")
        pdf.cell(40, 7, value, align="R", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
