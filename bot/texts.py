"""Everything the bot says, in Chinese, in one place."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from storage.enums import Outcome

SHANGHAI = ZoneInfo("Asia/Shanghai")

MENU = (
    "您可以回复：\n"
    "“最近怎么样” — 查看老人最近一次探访情况\n"
    "“给老人打个电话” — 马上安排一次探访电话\n"
    "“想请人上门看看” — 请工作人员上门看望\n"
    "“订阅日报” / “取消日报” — 每天一条平安消息\n"
    "“解除绑定” — 不再接收老人的消息"
)


def welcome(service_name: str) -> str:
    return (
        f"欢迎关注{service_name}！\n"
        "家属绑定老人后，可以随时查看老人的探访情况、收到提醒。\n"
        "请输入工作人员给您的 6 位绑定码，或扫描绑定二维码。\n\n" + MENU
    )


def confirm_prompt(who: str) -> str:
    return (
        f"您正在绑定：{who}。\n"
        "请回复登记手机号的后四位数字确认。\n"
        "回复即表示您同意接收老人的探访结果与提醒，并同意本服务保存绑定记录；"
        "您可随时回复“解除绑定”撤回。"
    )


def local_time(dt: datetime) -> str:
    t = dt.astimezone(SHANGHAI)
    return f"{t.month}月{t.day}日 {t:%H:%M}"


OUTCOME_WORDS: dict[Outcome, str] = {
    Outcome.WELL: "老人说一切都好，平安",
    Outcome.NEEDS_FOLLOWUP: "老人有需要跟进的事情，工作人员会联系处理",
    Outcome.EMERGENCY: "出现紧急情况，已通知值班人员处理",
    Outcome.UNREACHED: "多次拨打没有接通，工作人员会跟进",
    Outcome.REFUSED: "老人这次不愿意接受探访",
    Outcome.WRONG_NUMBER: "登记的电话号码可能有误，工作人员会核实",
    Outcome.DEFERRED: "老人约了改天再联系",
}

INTENT_WORDS: dict[str, str] = {
    "unwell": "提到身体有些不舒服",
    "emergency": "提到紧急情况",
    "home_hazard": "提到家里有安全隐患（如暖气、水电、煤气）",
    "need_service": "提到需要生活上的帮助",
    "lonely": "有些孤单，想念家人",
    "benefit_inquiry": "询问了补贴或待遇",
}

NOT_BOUND = "您还没有绑定老人。请输入工作人员给您的 6 位绑定码，或扫描绑定二维码。"
CODE_UNKNOWN = "绑定码不正确或已失效，请核对后重新输入，或联系工作人员重新获取。"
CODE_BLOCKED = "绑定码输错次数过多，请一小时后再试，或联系工作人员。"
CONFIRM_WRONG = "手机号后四位不正确，请再试一次。"
CONFIRM_LOCKED = "手机号后四位错误次数过多，此绑定码已失效，请联系工作人员重新获取。"
CONFIRM_NO_PHONE = "登记资料中没有手机号，无法确认绑定，请联系工作人员。"
UNSUPPORTED = "暂时只能看懂文字和语音消息。" + "\n" + MENU
VOICE_UNCLEAR = "抱歉，没听清您的语音。请打字回复，或回复数字（如 1 或 2）。"
STAFF_HELLO = "您已绑定为工作人员：新分配给您的任务和紧急提醒会推送到这里，请在探访工作台处理。"
ELDER_NO_ENGINE = "您好！已收到您的消息。工作人员会定期联系您；如有急事，请拨打 {hotline}。"
DIGEST_ON = "已为您开通每日平安消息，每天会告诉您老人的探访情况。回复“取消日报”可随时关闭。"
DIGEST_OFF = "已关闭每日平安消息。"
UNBOUND = "已解除与 {names} 的绑定，您将不再收到相关消息。"
NOTHING_TO_UNBIND = "您目前没有绑定任何老人。"


def bound(who: str) -> str:
    return f"绑定成功！您已绑定：{who}。\n\n{MENU}"


def choose_elder(names: list[str]) -> str:
    lines = [f"回复{i}：{n}" for i, n in enumerate(names, 1)]
    return "您绑定了多位老人，请选择：\n" + "\n".join(lines)


def call_scheduled(name: str) -> str:
    return f"好的，已安排马上给{name}打一次探访电话。接通情况可以回复“最近怎么样”查看。"


def call_later(name: str, when: str) -> str:
    return f"好的，现在不在{name}方便接电话的时间，已安排在 {when} 打探访电话。接通情况可以回复“最近怎么样”查看。"


def visit_requested(name: str) -> str:
    return f"好的，已通知工作人员上门看望{name}，一般会在 3 天内安排；有急事请直接拨打 12349。"


def call_needs_consent(name: str) -> str:
    return (f"{name}还没有同意（或已撤回同意）接受自动探访电话，按规定不能自动拨打。"
            "已通知工作人员联系或上门看望；有急事请直接拨打 12349。")
