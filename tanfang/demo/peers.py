"""Real SIP peers on 127.0.0.1 for interop tests, the demo and chaos tests: baresip and kamailio.

``BaresipPeer`` is the elder's phone: its own config dir, free ports, ``net_interface 127.0.0.1``,
answer mode auto or manual, a WAV as microphone (aufile; the call is hung up by baresip when the
file ends, so pad it for long calls), what it hears recorded by ``sndfile`` (``*-dec.wav``), and
control over its ``ctrl_tcp`` port (netstring JSON): DTMF, hang up, answer, reject.

``KamailioProxy`` is a registrar + record-routing proxy with digest auth (401 on REGISTER, 407 on
INVITE) for the users given, from a generated minimal ``kamailio.cfg`` run in the foreground.

Both are context managers and clean up their process; the pytest fixtures are in
``tests/integration/sip/conftest.py``; the demo village (``tanfang.demo.village``) scripts them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tanfang.demo.audio import (
    best_correlation,
    read_wav,
    silence_wav,
    speech_wav,
    wav_duration,
    write_wav,
)

__all__ = [
    "BaresipPeer",
    "KamailioProxy",
    "best_correlation",
    "free_port",
    "have_baresip",
    "have_kamailio",
    "read_wav",
    "running",
    "silence_wav",
    "speech_wav",
    "wav_duration",
    "write_wav",
]

HOST = "127.0.0.1"
BARESIP_MODULES = "/usr/lib/baresip/modules"
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"


def have_baresip() -> bool:
    return shutil.which("baresip") is not None and Path(BARESIP_MODULES, "ctrl_tcp.so").exists()


def have_kamailio() -> bool:
    return shutil.which("kamailio") is not None and Path(KAMAILIO_MODULES, "registrar.so").exists()


def free_port(kind: int = socket.SOCK_DGRAM, *, both: bool = False) -> int:
    """A port free for UDP (and TCP when ``both``) on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if not both:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind((HOST, port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((HOST, port))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t2:
                t2.bind((HOST, port + 1))  # baresip also opens SIP/TLS on port + 1
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


# ---- baresip ------------------------------------------------------------------------------


class _PortTaken(RuntimeError):
    pass


def _netstring(payload: dict[str, str]) -> bytes:
    data = json.dumps(payload).encode()
    return str(len(data)).encode() + b":" + data + b","


@dataclass
class BaresipPeer:
    """A baresip process acting as a phone. Start with :meth:`start` or as a context manager."""

    workdir: Path
    user: str = "elder"
    answer: str = "auto"  # "auto" | "manual"
    source_wav: Path | None = None  # microphone; None -> 120 s of silence
    registrar: str | None = None  # e.g. "127.0.0.1:5060" -> REGISTER there
    password: str | None = None
    transport: str = "udp"
    reject_incoming: bool = False  # manual mode + hang up every incoming call (486 Busy Here)
    max_calls: int = 4
    record: bool = True  # load sndfile (what the phone hears -> rec/*-dec.wav); off for load tests
    sip_port: int = field(default=0)
    ctrl_port: int = field(default=0)
    proc: subprocess.Popen[bytes] | None = None
    events: list[dict[str, object]] = field(default_factory=list)
    on_event: Callable[[dict[str, object]], None] | None = None  # called from the reader thread

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rec_dir = self.workdir / "rec"
        self.rec_dir.mkdir(exist_ok=True)
        self.sip_port = self.sip_port or free_port(both=True)
        self.ctrl_port = self.ctrl_port or free_port(socket.SOCK_STREAM)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._responses: dict[str, dict[str, object]] = {}
        self._reader: threading.Thread | None = None
        self._token = 0

    @property
    def uri(self) -> str:
        """Where to call this phone directly."""
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{self.user}@{HOST}:{self.sip_port}{suffix}"

    def _write_config(self) -> None:
        source = self.source_wav or silence_wav(self.workdir / "silence.wav", 120)
        span = max(60, 4 * self.max_calls + 8)
        rtp_base = 20000 + (self.sip_port % 200) * 200 if span <= 200 else 10000 + (self.sip_port % 20) * 2000
        config = f"""poll_method epoll
sip_listen {HOST}:{self.sip_port}
net_interface {HOST}
audio_path /usr/share/baresip
audio_player aubridge,nil
audio_alert aubridge,nil
audio_source aufile,{source}
ausrc_srate 8000
ausrc_channels 1
auplay_srate 8000
auplay_channels 1
rtp_ports {rtp_base}-{rtp_base + span - 1}
jitter_buffer_delay 1-10
call_max_calls {self.max_calls}
module_path {BARESIP_MODULES}
module g711.so
module aufile.so
module aubridge.so
{"module sndfile.so" if self.record else ""}
module_app account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen {HOST}:{self.ctrl_port}
snd_path {self.rec_dir}
"""
        (self.workdir / "config").write_text(config)
        answer = "manual" if self.reject_incoming else self.answer
        params = [f"answermode={answer}", "audio_codecs=PCMU,PCMA"]
        if self.registrar:
            aor = f"<sip:{self.user}@{self.registrar};transport={self.transport}>"
            params += ["regint=60"]
            if self.password:
                params.append(f"auth_pass={self.password}")
        else:
            aor = f"<sip:{self.user}@{HOST};transport={self.transport}>"
            params.append("regint=0")
        (self.workdir / "accounts").write_text(aor + ";" + ";".join(params) + "\n")
        (self.workdir / "contacts").write_text("")

    def start(self, timeout_s: float = 10.0) -> BaresipPeer:
        for attempt in range(3):
            try:
                return self._start(timeout_s)
            except _PortTaken:
                if attempt == 2:
                    raise
                self.sip_port = free_port(both=True)  # lost a race for the port: pick others
                self.ctrl_port = free_port(socket.SOCK_STREAM)
        raise AssertionError("unreachable")

    def _start(self, timeout_s: float) -> BaresipPeer:
        self._write_config()
        log = open(self.workdir / "baresip.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(["baresip", "-f", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "Address already in use" in self.log():
                    raise _PortTaken(self.log())
                raise RuntimeError(f"baresip exited: {self.log()[-2000:]}")
            try:
                self._sock = socket.create_connection((HOST, self.ctrl_port), timeout=0.5)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("baresip control port never opened")
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        if self.registrar:
            self.wait_registered(deadline - time.monotonic())
        return self

    def wait_registered(self, timeout_s: float = 10.0) -> None:
        """Poll ``reginfo`` until the registrar accepted us (the event may precede our connection)."""
        deadline = time.monotonic() + max(timeout_s, 1.0)
        while time.monotonic() < deadline:
            if "OK" in str(self.command("reginfo").get("data", "")):
                return
            time.sleep(0.1)
        raise TimeoutError(f"baresip did not register: {self.log()[-1500:]}")

    def _read_loop(self) -> None:
        buf = b""
        sock = self._sock
        assert sock is not None
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b":" in buf:
                head, _, rest = buf.partition(b":")
                if not head.isdigit() or len(rest) < int(head) + 1:
                    break
                n = int(head)
                body, buf = rest[:n], rest[n + 1:]
                try:
                    msg = json.loads(body)
                except ValueError:
                    continue
                with self._cond:
                    if msg.get("event"):
                        self.events.append(msg)
                        if self.reject_incoming and msg.get("type") == "CALL_INCOMING":
                            threading.Thread(target=self._reject, daemon=True).start()
                    elif msg.get("response"):
                        self._responses[str(msg.get("token"))] = msg
                    self._cond.notify_all()
                if msg.get("event") and self.on_event is not None:
                    self.on_event(msg)

    def _reject(self) -> None:
        """Busy: hang the incoming call up (baresip answers 486), off the reader thread. The phone may be
        stopped before baresip replies (a test that saw the 486 is done): no reply is then no error."""
        if self._sock is None:
            return
        with contextlib.suppress(TimeoutError, OSError):
            self.command("hangup")

    def command(self, cmd: str, params: str = "", timeout_s: float = 5.0) -> dict[str, object]:
        """Run a baresip menu command (``dial``, ``hangup``, ``accept``, ``sndcode``…) and return its reply."""
        assert self._sock is not None, "baresip not started"
        with self._lock:
            self._token += 1
            token = f"t{self._token}"
            self._sock.sendall(_netstring({"command": cmd, "params": params, "token": token}))
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"baresip did not answer {cmd!r}")
                self._cond.wait(left)
            return self._responses.pop(token)

    def send_dtmf(self, digits: str) -> None:
        """Key presses on the phone (RFC 4733 telephone-events)."""
        for d in digits:
            self.command("sndcode", d)

    def hangup(self) -> None:
        self.command("hangup")

    def accept(self) -> None:
        self.command("accept")

    def wait_event(self, kind: str, timeout_s: float = 10.0, *, after: int = 0) -> dict[str, object]:
        """Wait for a ctrl_tcp event such as CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED, REGISTER_OK."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for ev in self.events[after:]:
                    if ev.get("type") == kind:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {kind} event from baresip; got {[e.get('type') for e in self.events]}")
                self._cond.wait(left)

    def event_types(self) -> list[str]:
        with self._cond:
            return [str(e.get("type")) for e in self.events]

    def heard(self) -> list[Path]:
        """WAVs of what the phone received (decoded), newest last."""
        return sorted(self.rec_dir.glob("*-dec.wav"))

    def log(self) -> str:
        try:
            return (self.workdir / "baresip.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> BaresipPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- kamailio ---------------------------------------------------------------------------


@dataclass
class KamailioProxy:
    """kamailio as registrar + proxy: REGISTER challenged with 401, INVITE from ``invite_auth_users`` with 407."""

    workdir: Path
    users: dict[str, str] = field(default_factory=dict)  # username -> password
    invite_auth_users: tuple[str, ...] = ()
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(both=True)

    @property
    def domain(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def uri(self) -> str:
        return f"sip:{HOST}:{self.port}"

    def _config(self) -> str:
        pw = "\n".join(f'    if ($au == "{u}") {{ $var(pw) = "{p}"; }}' for u, p in self.users.items())
        invite_users = " || ".join(f'$fU == "{u}"' for u in self.invite_auth_users) or "0"
        return f"""#!KAMAILIO
debug=2
log_stderror=yes
memdbg=5
memlog=5
children=2
tcp_children=2
auto_aliases=no
listen=udp:{HOST}:{self.port}
listen=tcp:{HOST}:{self.port}
alias="{HOST}:{self.port}"
mpath="{KAMAILIO_MODULES}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "xlog.so"
modparam("rr", "enable_full_lr", 1)
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 2)
modparam("auth", "secret", "tanfang-test-secret")

route[PASSWORD] {{
    $var(pw) = "__no_such_password__";
{pw}
}}

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    t_check_trans();
    if (is_method("OPTIONS") && $rU == $null) {{ sl_send_reply("200", "OK"); exit; }}
    if (is_method("REGISTER")) {{
        route(PASSWORD);
        if (!pv_www_authenticate("$td", "$var(pw)", "0")) {{ www_challenge("$td", "0"); exit; }}
        if ($au != $tU) {{ sl_send_reply("403", "Forbidden"); exit; }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (is_method("INVITE") && ({invite_users})) {{
        route(PASSWORD);
        if (!pv_proxy_authenticate("$fd", "$var(pw)", "0")) {{ proxy_challenge("$fd", "0"); exit; }}
        if ($au != $fU) {{ sl_send_reply("403", "Forbidden"); exit; }}
        consume_credentials();
    }}
    remove_hf("Route");
    if (is_method("INVITE|SUBSCRIBE|REFER")) {{ record_route(); }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    if (!t_relay()) {{ sl_reply_error(); }}
}}
"""

    def start(self, timeout_s: float = 10.0) -> KamailioProxy:
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(self._config())
        run = self.workdir / "run"
        run.mkdir(exist_ok=True)
        log = open(self.workdir / "kamailio.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            ["kamailio", "-f", str(cfg), "-DD", "-E", "-m", "32", "-M", "8", "-Y", str(run),
             "-P", str(run / "kamailio.pid")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamailio exited: {self.log()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.3):
                time.sleep(0.2)
                return self
            time.sleep(0.05)
        raise RuntimeError("kamailio did not start listening")

    def log(self) -> str:
        try:
            return (self.workdir / "kamailio.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> KamailioProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(*peers: BaresipPeer | KamailioProxy) -> Iterator[None]:
    """Start several peers and stop them all, whatever happens."""
    started: list[BaresipPeer | KamailioProxy] = []
    try:
        for p in peers:
            p.start()
            started.append(p)
        yield
    finally:
        for p in reversed(started):
            p.stop()
