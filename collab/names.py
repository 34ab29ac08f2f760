"""Document names: what a name may be, and the one form it is known by.

Every entry point (the native protocol, the y-websocket path, HTTP routes, export
files) takes names through :func:`validate_document_name`, so a name that looks
like another is the other, and no name hides characters a reader cannot see.
"""

from __future__ import annotations

import unicodedata

from collab.errors import ErrorCode, ProtocolError

# Characters that change how a name looks without being seen: bidirectional
# embeddings, overrides and isolates, zero-width spaces and joiners, the word
# joiner and the byte order mark. (Unicode category Cf holds them all, and the
# soft hyphen, and nothing a document name needs.)
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Unicode's other default-ignorable code points (DerivedCoreProperties.txt: the
# combining grapheme joiner, Hangul fillers, variation selectors, tags...), which
# fonts draw as nothing, and blanks that look like a space or like nothing.
_DEFAULT_IGNORABLE = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_BLANKS = frozenset({"\u2800"})  # the braille pattern blank
_SPACES_ALLOWED = frozenset({" ", "\u3000"})  # the ideographic space is visibly wide
_EMOJI_PRESENTATION = frozenset({"\ufe0e", "\ufe0f"})  # after a symbol: text or emoji style


def _looks_like_nothing(ch: str, previous: str | None) -> bool:
    category = unicodedata.category(ch)
    if category in _INVISIBLE_CATEGORIES or ch in _BLANKS:
        return True
    if category == "Zs":
        return ch not in _SPACES_ALLOWED
    if ch in _EMOJI_PRESENTATION and previous and unicodedata.category(previous) == "So":
        return False  # "❤️": a symbol drawn as an emoji
    code = ord(ch)
    return any(low <= code <= high for low, high in _DEFAULT_IGNORABLE)


def validate_document_name(name: str, max_bytes: int) -> str:
    """The name a document is known by: ``name`` in Unicode NFC, so that two names
    that look the same are the same. Refused (ProtocolError, invalid_document_name):
    an empty name, one longer than ``max_bytes`` of UTF-8, and one with control,
    bidirectional-override, zero-width, default-ignorable (drawn as nothing) or
    blank characters other than the space (and the ideographic space)."""
    if name and len(name) <= max_bytes and name.isascii() and name.isprintable():
        # Most names, checked at every connection (16 -> 0.2 us): printable ASCII
        # is its own NFC form, one byte a character, and none is drawn as nothing.
        return name
    normal = unicodedata.normalize("NFC", name)
    if not normal:
        raise ProtocolError("document name must not be empty", code=ErrorCode.INVALID_DOCUMENT_NAME)
    if len(normal.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(
            f"document name is longer than {max_bytes} bytes",
            code=ErrorCode.INVALID_DOCUMENT_NAME,
        )
    previous = None
    for ch in normal:
        if _looks_like_nothing(ch, previous):
            raise ProtocolError(
                "document name must not contain control, bidirectional-override, "
                f"zero-width, invisible or blank characters (U+{ord(ch):04X})",
                code=ErrorCode.INVALID_DOCUMENT_NAME,
            )
        previous = ch
    return normal
