"""Source text: the one rule for where lines break, decoding bytes, and finding a line quickly.

Every pass that turns an offset into ``line:column`` (the parser, the formatter's comment
scan, diagnostics) uses the rule defined here, so a caret can never land on another line than
the parser meant. Lines break where Python's ``str.splitlines`` breaks them: ``\\r\\n``, lone
``\\r``, ``\\n``, vertical tab, form feed, the file/group/record separators, NEL (U+0085), LINE
SEPARATOR (U+2028) and PARAGRAPH SEPARATOR (U+2029). ``normalize_newlines`` rewrites each of
them to ``\\n`` before Lark sees the text (Lark counts only ``\\n``); columns are unchanged,
because a break only ever ends a line.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

# Longest first: "\r\n" is one break, not two.
LINE_BREAK = re.compile("\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_OTHER_BREAKS = re.compile("\r\n?|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")

# Bidirectional controls: they reorder how text is displayed, so a comment or string holding one
# can make a rule read differently from what it does ("Trojan Source", CVE-2021-42574).
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

UTF8_BOM = b"\xef\xbb\xbf"


def normalize_newlines(text: str) -> str:
    """``text`` with every line break written as ``\\n`` (a no-op for ordinary files)."""
    return _OTHER_BREAKS.sub("\n", text) if _OTHER_BREAKS.search(text) else text


class Lines:
    """Where each line of a text starts, computed once: line lookups cost a binary search,
    not a scan of the file, so rendering 10,000 diagnostics stays linear."""

    __slots__ = ("text", "starts", "ends")

    def __init__(self, text: str):
        self.text = text
        self.starts = [0]
        self.ends = []
        for m in LINE_BREAK.finditer(text):
            self.ends.append(m.start())
            self.starts.append(m.end())
        self.ends.append(len(text))

    def __len__(self) -> int:
        # like splitlines: a final line break does not open another line
        if len(self.starts) > 1 and self.starts[-1] == len(self.text):
            return len(self.starts) - 1
        return len(self.starts) if self.text else 0

    def line(self, number: int) -> str:
        """The text of line ``number`` (1-based), without its line break."""
        return self.text[self.starts[number - 1] : self.ends[number - 1]]

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        index = bisect.bisect_right(self.starts, offset) - 1
        return index + 1, offset - self.starts[index] + 1


_last: tuple[str, Lines] | None = None


def lines_of(text: str) -> Lines:
    """``Lines(text)``, reusing the last one built: callers render many diagnostics of the same
    source one at a time. (Replaced by one assignment, so sharing it between threads is safe.)"""
    global _last
    cached = _last
    if cached is not None and cached[0] is text:
        return cached[1]
    lines = Lines(text)
    _last = (text, lines)
    return lines


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Where bytes stopped being UTF-8, as a position a person can find."""

    line: int
    column: int
    message: str


def decode_source(data: bytes) -> tuple[str, DecodeError | None]:
    """Text of a rule (or test/alert) file: UTF-8, with one leading byte-order mark dropped.

    Invalid UTF-8 gives ``("", DecodeError)`` at the line and column of the first bad byte
    (the column counts the characters before it on its line, plus one)."""
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")
        line, column = Lines(before).position(len(before))
        message = f"not valid UTF-8: byte 0x{data[exc.start]:02x} ({exc.reason})"
        return "", DecodeError(line, column, message)
