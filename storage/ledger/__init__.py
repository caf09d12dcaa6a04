"""The elder ledger (台帐): read county Excel/CSV files, validate every row, import all or nothing,
write the template and export.

Pure parsers (``idcard``, ``phones``, ``categories``, ``columns``, ``values``), the streaming
``reader``, the ``validate`` step and the database side (``importer``, ``template``).
"""

from storage.ledger.categories import CategoryError, format_categories, parse_categories
from storage.ledger.idcard import IdNumber, IdNumberError, check_digit, make_id, normalise_id, parse_id
from storage.ledger.importer import LedgerImportReport, apply_records, import_ledger
from storage.ledger.phones import Phone, PhoneError, normalise_phone, split_phones
from storage.ledger.reader import LedgerFormatError, LedgerTable, RawRow, read_ledger
from storage.ledger.template import export_ledger, write_template
from storage.ledger.validate import ElderRecord, RowError, ValidationResult, validate_row, validate_rows

__all__ = [
    "CategoryError", "ElderRecord", "IdNumber", "IdNumberError", "LedgerFormatError", "LedgerImportReport",
    "LedgerTable", "Phone", "PhoneError", "RawRow", "RowError", "ValidationResult", "apply_records", "check_digit",
    "export_ledger", "format_categories", "import_ledger", "make_id", "normalise_id", "normalise_phone",
    "parse_categories", "parse_id", "read_ledger", "split_phones", "validate_row", "validate_rows",
    "write_template",
]
