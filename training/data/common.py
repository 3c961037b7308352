"""Shared by every loader of the package: the dataset errors, folder/path checks, strict UTF-8 CSV reading, image
cells, and the ONE bad-file policy (:class:`_BadFiles`, :func:`_verify_image`: ``check_images`` and
``on_bad_image``).

Bad files: a missing or unreadable image (or DICOM) raises an error that names the file and, for
CSV-driven sets, the CSV line referencing it. With ``on_bad_image="skip"`` such items are left
out and reported in ONE warning with their count and names; nothing is dropped silently.
``check_images`` chooses how much is verified at load time: ``"header"`` (default; opens every
file and reads its header: catches missing, empty and non-image files cheaply), ``"full"``
(decodes every pixel: also catches truncated files; slow on the full sets) or ``"none"``
(existence only).

Ambiguous or unsafe input is refused with a :class:`DatasetFormatError`, whatever ``on_bad_image``
says, because skipping it would silently change the data: two files that give the same image id
(``x.png`` beside ``x.PNG``; one DICOM or NIH image name in two folders; the message names both
files), a CSV path that leads outside the dataset folder (absolute or with ``..``), a CSV cell that
is not the number its column holds, and a CSV or list file that is not UTF-8 text (a leading BOM
is accepted). Messages name the file, the line (1-based file lines as an editor shows them, the
header is line 1) and the column.
"""

from __future__ import annotations

import csv as _csv
import io
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image as PILImage


class DatasetFormatError(ValueError):
    """A file of a dataset does not follow the published format; the message names the file/row."""


class CorruptImageError(DatasetFormatError):
    """An image or DICOM file exists but cannot be read; the message names the file."""


# ============================================================================ small helpers


def _existing_dir(root, name: str) -> Path:
    if root is None:
        raise ValueError(f"{name}: a root folder is required")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: dataset folder not found: {root}")
    return root


def _add_unique(found: dict, key, path: Path, what: str) -> None:
    """``found[key] = path``, refusing a second file for the same key: a silent choice between two
    files that claim one image id would depend on the directory listing order."""
    if key in found:
        raise DatasetFormatError(f"{what} found twice: {found[key]} and {path}; remove or rename "
                                 "one of them")
    found[key] = path


def _inside_root(root: Path, value: str, where: str) -> Path:
    """``root / value`` for a relative path read from a file of the dataset (``where`` names the file,
    line and column). An absolute path or a ``..`` component (POSIX or Windows spelling) would
    read outside ``root`` and is refused; the check is on the path as written, so symbolic links
    that the owner of the dataset folder placed inside it are still followed."""
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if posix.is_absolute() or windows.anchor or ".." in posix.parts or ".." in windows.parts:
        raise DatasetFormatError(f"{where}: {value!r} leads outside the dataset folder {root} "
                                 "(absolute paths and '..' are not allowed)")
    return root / posix


def _read_text(path: Path) -> str:
    """The text of a UTF-8 file (a leading BOM is dropped). Other bytes (e.g. latin-1 from a
    spreadsheet export) raise a DatasetFormatError naming the file, the line and the byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        end = raw.find(b"\n", exc.start)
        shown = raw[start:end if end >= 0 else len(raw)].decode("utf-8", "backslashreplace").rstrip("\r")
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DatasetFormatError(
            f"{path}, line {line}: byte 0x{raw[exc.start]:02x} (byte {exc.start - start + 1} of the "
            f"line) is not UTF-8 text: {shown[:100]!r}; save the file as UTF-8") from None


def _csv_rows(path: Path, need: Sequence[str | tuple[str, ...]]) -> Iterator[tuple[str, dict[str, str]]]:
    """``(where, row)`` for every non-blank record after the header of the UTF-8 CSV ``path``.

    ``where`` is ``"<file name>, line N"`` with N the record's first line in the file (header =
    line 1, blank lines counted); ``row`` maps each stripped column name to the stripped cell.
    ``need`` lists the columns that must be in the header exactly once (a tuple: the first of
    these alternatives present) and in every record. Raises DatasetFormatError otherwise, and for
    malformed CSV (parsed strictly: an unclosed quote would otherwise swallow the rest of the file
    into one cell) or non-UTF-8 text.
    """
    reader = _csv.reader(io.StringIO(_read_text(path), newline=""), strict=True)
    header, index, line = None, [], 1
    try:
        for rec in reader:
            if rec and "".join(rec).strip():
                if header is None:
                    header = [h.strip() for h in rec]
                    index = [_header_column(path, header, n) for n in need]
                elif len(rec) <= max(index, default=-1):
                    raise DatasetFormatError(
                        f"{path.name}, line {line}: {len(rec)} field(s), expected at least "
                        f"{max(index) + 1} (for column {header[max(index)]!r})")
                else:
                    yield f"{path.name}, line {line}", dict(zip(header, (v.strip() for v in rec)))
            line = reader.line_num + 1
    except _csv.Error as exc:
        raise DatasetFormatError(f"{path}, line {line}: malformed CSV record ({exc}; an unclosed "
                                 "quote?)") from None
    if header is None:
        raise DatasetFormatError(f"{path}: empty file, expected a header line")


def _header_column(path: Path, header: list[str], need: str | tuple[str, ...]) -> int:
    """Index of the needed column (or the first present of alternatives) in ``header``."""
    names = (need,) if isinstance(need, str) else need
    name = next((n for n in names if n in header), None)
    if name is None:
        raise DatasetFormatError(f"{path}: missing column {' or '.join(map(repr, names))}; "
                                 f"header is {header}")
    if header.count(name) > 1:
        raise DatasetFormatError(f"{path}: column {name!r} appears {header.count(name)} times in "
                                 f"the header {header}")
    return header.index(name)


def _whole_number(row: dict[str, str], column: str, where: str, blank_ok: bool = False) -> int | None:
    """A CSV cell holding a whole number 0 <= n < 2**31 (``7``, ``007`` or ``7.0``); a blank cell
    gives None when ``blank_ok``. Anything else raises an error naming file, line and column."""
    text = row[column]
    if text == "" and blank_ok:
        return None
    m = re.fullmatch(r"([0-9]+)(?:\.0*)?", text)
    if not m or int(m[1]) >= 2 ** 31:
        raise DatasetFormatError(f"{where}, column {column!r}: value {text!r} is not a whole number "
                                 f"(0 to {2 ** 31 - 1}){' or blank' if blank_ok else ''}")
    return int(m[1])


def natural_key(text: str):
    """Sort key putting ``benign (2)`` before ``benign (10)`` (Q5)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _image_cell(path: Path) -> dict:
    return {"path": str(Path(path).resolve()), "bytes": None}


def _bytes_cell(data: bytes) -> dict:
    return {"path": None, "bytes": data}


def _verify_image(path: Path, check: str):
    """Open ``path`` as an image according to ``check``; returns (width, height) or None."""
    if check == "none":
        return None
    try:
        with PILImage.open(path) as im:
            if check == "full":
                im.load()
            return im.size
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        raise CorruptImageError(f"cannot read image file {path}: {exc}") from exc


class _BadFiles:
    """Applies the ``on_bad_image`` policy and collects what was skipped for one warning."""

    def __init__(self, dataset: str, on_bad_image: str, check_images: str):
        if on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")
        if check_images not in ("header", "full", "none"):
            raise ValueError(f"check_images must be 'header', 'full' or 'none', got {check_images!r}")
        self.dataset, self.policy, self.check = dataset, on_bad_image, check_images
        self.skipped: list[str] = []

    def handle(self, exc: Exception) -> None:
        """Re-raise ``exc`` (policy "raise") or record it (policy "skip")."""
        if self.policy == "raise":
            raise exc
        self.skipped.append(str(exc))

    def image(self, path: Path | None, where: str = ""):
        """Check one image file; returns its size, or False when it was skipped."""
        try:
            if path is None or not Path(path).is_file():
                raise FileNotFoundError(f"{where}image file not found: {path}")
            try:
                return _verify_image(Path(path), self.check) or True
            except CorruptImageError as exc:
                raise CorruptImageError(f"{where}{exc}") from exc
        except (FileNotFoundError, CorruptImageError) as exc:
            self.handle(exc)
            return False

    def report(self) -> None:
        if self.skipped:
            shown = "; ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            warnings.warn(f"{self.dataset}: skipped {len(self.skipped)} missing or unreadable "
                          f"file(s) (on_bad_image='skip'): {shown}", stacklevel=3)
