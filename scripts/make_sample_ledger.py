"""Generate the synthetic sample ledger (fictional people) deterministically.

    .venv/bin/python scripts/make_sample_ledger.py            # writes samples/ledger_sample.xlsx and _gbk.csv

Every number is made up: ID numbers carry the 尚志市 prefix 230183 and a valid check digit;
elder mobiles are 1390000xxxx, contacts' mobiles 1390001xxxx, landlines 0451-5399xxxx — distinctive
so they can be grepped for in logs (they must never appear there in clear).
"""

from __future__ import annotations

import csv
import random
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from storage.ledger.columns import COLUMNS, Field  # noqa: E402
from storage.ledger.idcard import make_id  # noqa: E402

SEED = 20240301
COUNTY = "230183"
TITLE = "尚志市特殊困难老年人探访关爱台帐（样例，全部为虚构数据）"
YABULI = ("亚布力镇", ["亚布力社区", "青云村", "东兴村", "红旗村"])
HEDONG = ("河东朝鲜族乡", ["河东村", "朝阳村", "新兴村", "光明村"])
HAN_SURNAMES = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗郑梁宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
HAN_MALE = ["建国", "长林", "德福", "永贵", "振华", "宝山", "玉田", "国栋", "凤山", "占魁", "庆祥", "树林", "春生", "万有"]
HAN_FEMALE = ["桂兰", "秀英", "淑珍", "玉芝", "凤霞", "秀兰", "桂芝", "淑芬", "玉梅", "素琴", "翠花", "春兰", "秀云"]
KO_SURNAMES = "金朴李崔郑姜赵尹张林"
KO_MALE = ["英哲", "永洙", "成浩", "东植", "光日", "昌洙", "明哲", "龙范"]
KO_FEMALE = ["顺子", "英子", "善姬", "玉顺", "贞淑", "明淑", "春子", "福顺"]
CHILD_MALE = ["志强", "海军", "立新", "国庆", "卫东", "建军", "春雷"]
CHILD_FEMALE = ["丽华", "晓燕", "红梅", "春艳", "海燕", "丽娟", "雪梅"]
GRID_WORKERS = {v: n for v, n in zip(YABULI[1] + HEDONG[1],
                                     ["孙晓东", "刘春雨", "高立伟", "周明", "金正浩", "朴美兰", "崔光明", "李顺姬"],
                                     strict=True)}
# All six categories, in combinations typical of a rural county's ledger.
CATEGORY_POOL = [
    "独居", "空巢", "留守", "空巢、留守", "独居、失能", "失能", "重残", "计划生育特殊家庭", "空巢、重残",
    "独居、计划生育特殊家庭", "留守、失能", "独居、重残", "空巢、失能",
]


def _rows(rng: random.Random) -> list[dict[Field, object]]:
    rows: list[dict[Field, object]] = []
    serials: dict[date, int] = {}
    landline = 0
    for i in range(50):
        korean = i >= 32  # the last 18 live in 河东朝鲜族乡, most of them Korean-speaking
        town, villages = HEDONG if korean else YABULI
        village = villages[i % len(villages)]
        male = rng.random() < 0.45
        if korean and i % 5 != 0:
            name = rng.choice(KO_SURNAMES) + rng.choice(KO_MALE if male else KO_FEMALE)
            locale = "朝鲜语"
        else:
            name = rng.choice(HAN_SURNAMES) + rng.choice(HAN_MALE if male else HAN_FEMALE)
            locale = "普通话"
        born = date(1930, 1, 1) + timedelta(days=rng.randrange((date(1960, 12, 31) - date(1930, 1, 1)).days))
        seq = serials.get(born, rng.randrange(10, 400)) + 1
        if (seq % 2 == 1) != male:
            seq += 1
        serials[born] = seq
        id_number = make_id(COUNTY, born, seq)
        cats = CATEGORY_POOL[i % len(CATEGORY_POOL)]
        phones = [f"1390000{i + 1:04d}"]
        if i % 6 == 2:  # a few households with a landline as well, or only a landline
            landline += 1
            phones = [f"0451-5399{landline:04d}"] + (phones if i % 12 != 2 else [])
        surname = name[0]
        contacts, relations, contact_phones = [], [], []
        if "独居" not in cats or i % 2 == 0:
            son = rng.random() < 0.5
            contacts.append(surname + rng.choice(CHILD_MALE if son else CHILD_FEMALE))
            relations.append("儿子" if son else "女儿")
            contact_phones.append(f"1390001{len(rows) * 2 + 1:04d}")
        if "独居" in cats or "失能" in cats or i % 7 == 0:
            if i % 3 == 0:
                contacts.append(rng.choice(HAN_SURNAMES) + rng.choice(HAN_FEMALE))
                relations.append("邻居")
            else:
                contacts.append(GRID_WORKERS[village])
                relations.append("网格员")
            contact_phones.append(f"1390001{len(rows) * 2 + 2:04d}")
        high = "失能" in cats and "独居" in cats or ("重残" in cats and "独居" in cats)
        risk = "高风险" if high else ("重点" if any(c in cats for c in ("失能", "重残")) else "一般")
        rows.append({
            Field.NAME: name,
            Field.SEX: "男" if male else "女",
            Field.ID_NUMBER: id_number,
            Field.BIRTH_DATE: born,
            Field.PHONE: "、".join(phones),
            Field.ADDRESS: f"{town}{village}{rng.randint(1, 9)}组{rng.randint(1, 60)}号",
            Field.TOWNSHIP: town,
            Field.VILLAGE: village,
            Field.CATEGORY: cats,
            Field.RISK: risk,
            Field.LOCALE: locale,
            Field.CONTACT_NAME: "、".join(contacts),
            Field.CONTACT_PHONE: "、".join(contact_phones),
            Field.CONTACT_RELATION: "、".join(relations),
            Field.CONSENT: "" if i % 9 == 4 else "是",
            Field.NOTE: "行动不便，需上门探访" if "失能" in cats else "",
        })
    return rows


def write_xlsx(rows: list[dict[Field, object]], path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "台帐"
    ws.cell(row=1, column=1, value=TITLE).font = Font(bold=True, size=14)
    ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(COLUMNS) + 1)
    ws.cell(row=1, column=1).alignment = Alignment(horizontal="center")
    ws.append(["序号"] + [c.header for c in COLUMNS])
    for n, row in enumerate(rows, start=1):
        values: list[object] = [n]
        for c in COLUMNS:
            v = row.get(c.field, "")
            values.append(datetime.combine(v, datetime.min.time()) if isinstance(v, date) else (v or None))
        ws.append(values)
        for col in (COLUMNS.index(next(c for c in COLUMNS if c.field is Field.BIRTH_DATE)) + 2,):
            ws.cell(row=ws.max_row, column=col).number_format = "yyyy-mm-dd"
    wb.save(path)


def write_csv(rows: list[dict[Field, object]], path: Path) -> None:
    with path.open("w", encoding="gbk", newline="") as f:
        w = csv.writer(f)
        w.writerow([TITLE])
        w.writerow(["序号"] + [c.header for c in COLUMNS])
        for n, row in enumerate(rows, start=1):
            w.writerow([n] + [(v.isoformat() if isinstance(v, date) else str(v or "")) for c in COLUMNS
                              for v in (row.get(c.field, ""),)])


def main() -> None:
    rows = _rows(random.Random(SEED))
    out = REPO / "samples"
    out.mkdir(exist_ok=True)
    write_xlsx(rows, out / "ledger_sample.xlsx")
    write_csv(rows, out / "ledger_sample_gbk.csv")
    print(f"wrote {len(rows)} elders to {out / 'ledger_sample.xlsx'} and {out / 'ledger_sample_gbk.csv'}")


if __name__ == "__main__":
    main()
