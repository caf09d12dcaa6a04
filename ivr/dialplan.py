"""Which SIP URI to dial for a phone number: one template, filled with the normalised number.

``DialPlan("sip:{number}@trunk.example:5060")``; tests point it at a baresip phone with
``TANFANG_SIP_DIAL_TEMPLATE="sip:{number}@127.0.0.1:5080"``. A number never appears in logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_KEEP = re.compile(r"[^0-9+*#]")


class DialPlanError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class DialPlan:
    template: str

    def __post_init__(self) -> None:
        if "{number}" not in self.template or not self.template.startswith(("sip:", "sips:")):
            raise DialPlanError(f"拨号模板必须是 sip: 开头并包含 {{number}}：{self.template!r}")

    @classmethod
    def for_trunk(cls, trunk: str) -> DialPlan:
        """``sip:host:port`` of the trunk → ``sip:{number}@host:port``."""
        host = trunk.split(":", 1)[1] if trunk.startswith(("sip:", "sips:")) else trunk
        host = host.split(";", 1)[0].split("@")[-1]
        return cls(f"sip:{{number}}@{host}")

    def uri(self, number: str) -> str:
        digits = _KEEP.sub("", number)
        if not digits.lstrip("+"):
            raise DialPlanError("电话号码为空或无效")
        return self.template.format(number=digits)
