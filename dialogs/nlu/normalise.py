"""Text normalisation shared by training and parsing: full-width forms, punctuation, fillers.

Speech recognition gives unpunctuated text with stray fillers; typed WeChat text has full-width
punctuation and emoji. Both are folded into one canonical form before features are taken.
"""

from __future__ import annotations

import re
import unicodedata

# Fillers removed when they stand alone (a space-separated token) or lead the utterance.
_FILLERS: dict[str, tuple[str, ...]] = {
    "zh": ("那个", "这个", "就是说", "就是", "呃", "额", "哎", "唉", "那啥", "嗯嗯嗯"),
    "ko": ("음", "저기", "저기요", "그러니까", "있잖아요", "뭐냐"),
}
# Hesitation sounds that never carry meaning anywhere in a Mandarin utterance.
_ZH_NOISE = re.compile(r"[呃额]")
_ZH_BACKCHANNEL = frozenset({"嗯", "嗯呐", "嗯哪", "嗯嗯", "啊", "哦", "喂"})
_PUNCT_CATEGORIES = ("P", "S", "C", "Z")


def _strip_punct(text: str) -> str:
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        out.append(" " if cat[0] in _PUNCT_CATEGORIES else ch)
    return "".join(out)


def normalise(text: str, locale: str = "zh") -> str:
    """Canonical form: NFKC, lower case, punctuation/emoji as spaces, fillers dropped."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = _strip_punct(t)
    tokens = t.split()
    fillers = _FILLERS.get(locale, ())
    kept = [tok for tok in tokens if tok not in fillers]
    if locale == "zh":
        kept = [_ZH_NOISE.sub("", tok) for tok in kept]
        kept = [tok for tok in kept if tok]
        # A filler glued to the front of the first token ("那个我挺好的").
        while kept:
            head = kept[0]
            for f in fillers:
                if head.startswith(f) and len(head) > len(f) + 1:
                    kept[0] = head[len(f):]
                    break
            else:
                break
        # A leading back-channel ("嗯呐 头晕乎乎的") is not an answer when content follows it.
        if len(kept) > 1 and kept[0] in _ZH_BACKCHANNEL:
            kept = kept[1:]
    result = " ".join(kept)
    return result if result else " ".join(tokens)
