"""The ledger's columns: what each means, the Chinese headers that name it, and the template order."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from storage.ledger._text import squash_spaces, to_halfwidth


class Field(enum.StrEnum):
    NAME = "name"
    SEX = "sex"
    ID_NUMBER = "id_number"
    BIRTH_DATE = "birth_date"
    PHONE = "phone"
    ADDRESS = "address"
    TOWNSHIP = "township"
    VILLAGE = "village"
    CATEGORY = "category"
    RISK = "risk"
    LOCALE = "locale"
    CONTACT_NAME = "contact_name"
    CONTACT_PHONE = "contact_phone"
    CONTACT_RELATION = "contact_relation"
    CONSENT = "consent"
    NOTE = "note"
    SERIAL = "serial"  # 序号: recognised so it is not mistaken for data, otherwise ignored


@dataclass(frozen=True)
class ColumnSpec:
    field: Field
    header: str  # the template's header text
    required: bool
    help: str  # the template's instructions (Chinese)
    example: str
    aliases: tuple[str, ...] = ()


COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec(Field.NAME, "姓名", True, "老人姓名", "王桂兰", ("老人姓名", "名字", "姓 名")),
    ColumnSpec(Field.SEX, "性别", False, "男/女；可空（按身份证号判断），填写时须与身份证号一致", "女"),
    ColumnSpec(
        Field.ID_NUMBER, "身份证号", True,
        "18位居民身份证号；本列请设为“文本”格式，否则 Excel 会把号码变成科学计数法、丢掉后几位",
        "230183194503120026",
        ("身份证号码", "公民身份号码", "身份证", "证件号码", "居民身份证号码", "身份证件号码", "公民身份证号码", "身份证号码(18位)"),
    ),
    ColumnSpec(Field.BIRTH_DATE, "出生日期", False, "可空；填写时须与身份证号一致，如 1945-03-12", "1945-03-12",
               ("出生年月", "出生年月日")),
    ColumnSpec(
        Field.PHONE, "联系电话", True,
        "老人本人的电话，可填多个，用“、”分隔；手机11位，座机带区号如 0451-53990001",
        "13900000001、0451-53990001",
        ("电话", "手机", "联系方式", "手机号", "手机号码", "电话号码", "本人电话", "老人电话", "本人联系电话",
         "固定电话", "座机", "座机号码", "本人手机", "联系电话号码"),
    ),
    ColumnSpec(Field.ADDRESS, "住址", False, "家庭住址", "亚布力镇青云村三组12号",
               ("家庭住址", "现住址", "居住地址", "地址", "家庭地址", "现居住地址", "居住地")),
    ColumnSpec(Field.TOWNSHIP, "乡镇（街道）", True, "须与已导入的区划名称一致", "亚布力镇",
               ("乡镇", "街道", "乡镇街道", "所属乡镇", "乡/镇", "镇", "乡镇/街道", "所属乡镇(街道)", "乡(镇)")),
    ColumnSpec(Field.VILLAGE, "村（社区）", True, "须是该乡镇下已导入的村或社区", "青云村",
               ("村", "社区", "村社区", "所属村", "村居", "村/社区", "所属社区", "村委会", "所属村(社区)", "行政村")),
    ColumnSpec(
        Field.CATEGORY, "老人类别", True,
        "独居、空巢、留守、失能、重残、计划生育特殊家庭，可填多个，用“、”分隔",
        "独居、失能",
        ("类别", "人员类别", "老人类型", "类型", "困难类型", "特殊困难类型", "对象类别", "特殊困难老人类别"),
    ),
    ColumnSpec(Field.RISK, "风险等级", False, "一般/重点/高风险；可空（按类别确定）", "高风险", ("风险", "风险级别")),
    ColumnSpec(Field.LOCALE, "语言", False, "普通话或朝鲜语；可空（普通话）", "普通话",
               ("使用语言", "通话语言", "语种", "交流语言")),
    ColumnSpec(Field.CONTACT_NAME, "紧急联系人", False, "家属、邻居或网格员姓名；多人用“、”分隔", "李建国",
               ("联系人", "联系人姓名", "紧急联系人姓名", "监护人", "监护人姓名")),
    ColumnSpec(Field.CONTACT_PHONE, "联系人电话", False, "与紧急联系人一一对应，用“、”分隔", "13900010001",
               ("紧急联系人电话", "联系人手机", "紧急联系电话", "紧急联系人联系电话", "联系人联系电话", "监护人电话",
                "联系人联系方式", "紧急联系人联系方式")),
    ColumnSpec(Field.CONTACT_RELATION, "与老人关系", False, "儿子、女儿、邻居、网格员等", "儿子",
               ("关系", "与本人关系", "联系人关系", "与老人的关系", "与被探访人关系")),
    ColumnSpec(Field.CONSENT, "知情同意", False, "老人是否同意接受电话探访：是/否，或同意日期；可空（未确认）", "是",
               ("同意", "是否同意", "本人同意", "知情同意书", "是否同意探访", "是否签署知情同意书")),
    ColumnSpec(Field.NOTE, "备注", False, "其他说明", "", ("说明", "情况说明")),
)
SERIAL_HEADERS = ("序号", "编号", "No", "NO", "no")

_SPEC = {c.field: c for c in COLUMNS}
_BRACKETED = re.compile(r"\([^)]*\)")


def spec(field: Field) -> ColumnSpec:
    return _SPEC[field]


def header_key(text: str) -> str:
    """Normalise a header cell: half-width, no spaces, no required-markers or trailing colon."""
    return squash_spaces(to_halfwidth(text)).strip("*★※:").replace("（", "(").replace("）", ")")


def _build_aliases() -> dict[str, Field]:
    out: dict[str, Field] = {}
    for c in COLUMNS:
        for name in (c.header, *c.aliases):
            out[header_key(name)] = c.field
    for name in SERIAL_HEADERS:
        out[header_key(name)] = Field.SERIAL
    return out


_ALIASES = _build_aliases()

# Words under a merged group header (紧急联系人 → 姓名 | 电话 | 关系; 联系方式 → 手机 | 座机).
_SUB_NAME = {"姓名", "名字"}
_SUB_PHONE = {"电话", "手机", "座机", "联系电话", "固定电话", "手机号", "手机号码", "电话号码", "联系方式", "本人", "老人", "本人电话"}
_SUB_RELATION = {"关系", "与老人关系", "与本人关系"}


def match_header(text: object) -> Field | None:
    """The field a header cell names, or ``None``."""
    if text is None:
        return None
    key = header_key(str(text))
    if not key:
        return None
    for candidate in (key, key.replace("(", "").replace(")", ""), _BRACKETED.sub("", key)):
        if candidate in _ALIASES:
            return _ALIASES[candidate]
    return None


def is_sub_header(text: object) -> bool:
    if text is None:
        return False
    key = header_key(str(text))
    return key in _SUB_NAME or key in _SUB_PHONE or key in _SUB_RELATION or match_header(text) is not None


def resolve_grouped(group: object, sub: object) -> Field | None:
    """The field of a column under a merged group header (``group``) with sub-header ``sub``."""
    g = match_header(group)
    s_key = header_key(str(sub)) if sub is not None else ""
    s = match_header(sub)
    if g in (Field.CONTACT_NAME, Field.CONTACT_PHONE):
        if s_key in _SUB_NAME or s is Field.NAME:
            return Field.CONTACT_NAME
        if s_key in _SUB_PHONE or s in (Field.PHONE, Field.CONTACT_PHONE):
            return Field.CONTACT_PHONE
        if s_key in _SUB_RELATION or s is Field.CONTACT_RELATION:
            return Field.CONTACT_RELATION
    if g is Field.PHONE and (s_key in _SUB_PHONE or s is Field.PHONE):
        return Field.PHONE
    if s is not None:
        return s
    return g
