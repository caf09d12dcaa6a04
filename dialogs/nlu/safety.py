"""Emergency safety net: phrases that can only raise a label to ``emergency``, never lower one.

A statistical model can miss a rare wording of a fall or a fire; these patterns catch the
unmistakable ones. A negation just before a match ("没摔倒", "不会着火") cancels it.
"""

from __future__ import annotations

import re

_ZH_PATTERNS = [
    # falls
    r"(摔|跌|掉|倒|栽)[^，。]{0,8}(起不来|爬不起来|起不了|站不起来|动不了|起不来身)",
    r"(摔|跌|倒|躺)在?(地上|地下|炕下)",
    r"摔[^，。]{0,6}(流血|出血|磕破|骨折|断了)",
    # chest pain, heart
    r"(胸口|心口|胸部|前胸|胸)(疼|痛|闷|压|憋|绞)",
    r"心脏病犯|心梗|心绞痛",
    # breathlessness
    r"(喘|穿|串)不(上|过|动|了)气?|上不来气|透不过气|呼吸困难|憋死|喘不动|没气了",
    # fire and smoke
    r"着火|失火|起火|火着了|烧着了|引着了|浓烟|(全|都)是烟|好多烟|冒黑烟|房子冒烟|屋里冒烟",
    # gas / carbon monoxide poisoning
    r"中毒|熏倒|熏晕|熏迷糊|(煤气|燃气|煤烟)[^，。]{0,8}(晕|倒|迷糊)了",
    # calls for help
    r"救命|就命|救救我|快来人|打120|打一二零|叫救护车|叫120",
    # unconsciousness, stroke, bleeding
    r"昏迷|昏过去|昏倒|晕过去|晕倒|叫不醒|不省人事|没意识|抽过去|不吱声了|咋叫都不",
    r"嘴歪|(半边|半拉|一边)身子",
    r"吐血|血流不止|流(了)?好多血",
]
_KO_PATTERNS = [
    r"넘어(져|졌)",
    r"쓰러(져|졌|지)",
    r"숨(이|을)?\s*(차|막|못|안 쉬|쉴 수가 없)",
    r"불(이)?\s*(났|나써|붙었)|불이야",
    r"연기가\s*(가득|꽉|많)",
    r"살려",
    r"의식(이|을)?\s*(없|잃)|정신(을)?\s*잃|깨어나지|안 깨어나",
    r"가슴이\s*(너무|많이|막)?\s*(아파|답답|조여)|심장이\s*(너무)?\s*아파",
    r"중독",
    r"구급차|120",
    r"피가\s*(많이|계속)",
    r"마비",
    # a fall (넘어지다, 떨어지다, 미끄러지다, 자빠지다) and cannot get up or move
    r"(넘어|떨어|미끄러|자빠|쓰러)\S*\s*(\S+\s*){0,3}?(못\s*일어나|일어나지|일어날\s*수|못\s*움직|안\s*움직|꼼짝)",
    # breathlessness, chest pain (Yanbian -오/-소 endings too)
    r"숨이\s*(가빠|가쁘|가뻐)|숨\s*을?\s*못\s*쉬",
    r"가슴이\s*(\S+\s*){0,2}?(아파|아프|아퍼|조이|조여|찢어|뻐개|터질|쥐어)",
    # fire, smoke, fumes with symptoms
    r"불이\s*(번졌|번져|붙|났)|불났|불타",
    r"연기가\s*(자욱|자옥|막\s*나)|시커먼\s*연기",
    r"(가스|와사|연탄|냄새)\S*\s*(\S+\s*){0,4}?(어지러|쓰러|토하|토해|토했|머리가\s*깨질|정신)",
    r"가스\s*(를|에)?\s*(먹|취했)",
    # stroke signs, unconsciousness, bleeding, calling an ambulance
    r"입이\s*돌아가|한쪽\s*(팔|다리|몸|손|얼굴)|말이\s*안\s*나와|말이\s*안\s*나오",
    r"기절|까무러|혼절|숨을\s*안\s*쉬",
    r"피가\s*(안\s*멎|안\s*멈|철철|줄줄|멈추지)",
    r"일이영|일이공",
]
_ZH_NEGATION = re.compile(r"(没|没有|不|别|怕|防|没得|不会|不能让)$")
_KO_NEGATION = re.compile(r"(안|않|없)\s*$")

_COMPILED = {
    "zh": [re.compile(p) for p in _ZH_PATTERNS],
    "ko": [re.compile(p) for p in _KO_PATTERNS],
}


def emergency_trigger(normalised: str, locale: str) -> str | None:
    """The phrase that marks ``normalised`` as an emergency, or ``None``."""
    text = normalised.replace(" ", "") if locale == "zh" else normalised
    negation = _ZH_NEGATION if locale == "zh" else _KO_NEGATION
    for pattern in _COMPILED.get(locale, []):
        for m in pattern.finditer(text):
            before = text[max(0, m.start() - 3) : m.start()]
            if negation.search(before):
                continue
            return m.group(0)
    return None
