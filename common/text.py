"""Text shown to a person, made safe to show: control, bidirectional and invisible characters written out.

A goal, a tool name or an argument comes from a client or a model. Shown as it is, an
escape sequence could rewrite the line an operator reads at a prompt, and a bidirectional
override (U+202E) or an invisible character could make text read otherwise than it is.
Each such character is shown as its JSON escape (`\\u202e`), which also keeps JSON text valid.
"""

import re

# Controls (C0 but tab, line feed and carriage return; DEL; C1), line and paragraph separators,
# and the format characters (Cf) of Unicode: bidirectional controls, zero-width characters, tags.
_UNSHOWN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e007f]"
)
_LINE_BREAKS = re.compile("[\t\n\r]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if code > 0xFFFF:  # as JSON writes it: a surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def printable(text: str, *, multiline: bool = True) -> str:
    """Return `text` with every control, bidirectional and invisible character written as its escape.

    Tabs and line breaks are kept when `multiline`, else written out too.
    """
    text = _UNSHOWN.sub(_escaped, text)
    return text if multiline else _LINE_BREAKS.sub(_escaped, text)
