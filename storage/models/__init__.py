"""All models, imported here so ``Base.metadata`` is complete (migrations and tests rely on it)."""

from storage.models.base import Base
from storage.models.checkin import CallAttempt, CheckIn, CheckInTransition
from storage.models.elder import Contact, Elder, ElderPhone, Profile
from storage.models.escalation import (  # noqa: F401
    Alert,
    AuditLog,
    ConsoleSession,
    Escalation,
    EscalationEvent,
    RotaEntry,
    Visit,
)
from storage.models.region import Region
from storage.models.schedule import (  # noqa: F401
    DeviceSignal,
    DeviceToken,
    HomeVisitTask,
    PlannerLease,
    SurgeEvent,
    SurgeEventRegion,
)
from storage.models.security import LoginFailure  # noqa: F401
from storage.models.staff import Staff
from storage.models.wechat import (  # noqa: F401
    WechatBinding,
    WechatBindingCode,
    WechatConversation,
    WechatDedup,
    WechatFollower,
    WechatToken,
)

__all__ = ["Base", "CallAttempt", "CheckIn", "CheckInTransition", "Contact", "Elder", "ElderPhone", "Profile", "Region", "Staff"]
