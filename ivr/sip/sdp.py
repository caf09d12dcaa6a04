"""SDP offer/answer for one audio stream: PCMU, PCMA and telephone-event (aiosipua's SDP model)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiosipua.sdp import (
    ConnectionData,
    MediaDescription,
    Origin,
    SdpMessage,
    TimingField,
    parse_sdp,
    serialize_sdp,
)

SUPPORTED = {0: "PCMU", 8: "PCMA"}
DTMF_PT = 101


class SdpError(ValueError):
    """The far end's SDP cannot be used (no audio, no common codec, unparsable)."""


@dataclass(frozen=True)
class RemoteMedia:
    addr: tuple[str, int]
    payload_type: int
    dtmf_payload_type: int | None
    direction: str


def build_sdp(host: str, port: int, session_id: int, version: int, *,
              payload_types: tuple[int, ...] = (0, 8)) -> bytes:
    """Our offer (or, with a single payload type, our answer to a re-INVITE)."""
    formats = [str(pt) for pt in payload_types] + [str(DTMF_PT)]
    attrs: dict[str, list[str]] = {
        "rtpmap": [f"{pt} {SUPPORTED[pt]}/8000" for pt in payload_types] + [f"{DTMF_PT} telephone-event/8000"],
        "fmtp": [f"{DTMF_PT} 0-15"],
        "ptime": ["20"],
        "sendrecv": [],
    }
    media = MediaDescription(media="audio", port=port, proto="RTP/AVP", formats=formats, attributes=attrs)
    sdp = SdpMessage(
        version=0,
        origin=Origin(username="tanfang", session_id=str(session_id), session_version=str(version),
                      address=host),
        session_name="tanfang",
        connection=ConnectionData(address=host),
        timing=TimingField(),
        media=[media],
    )
    return serialize_sdp(sdp).encode()


def parse_remote(body: bytes, *, offered: tuple[int, ...] = (0, 8)) -> RemoteMedia:
    """Pick the far end's audio address, the first codec of ours it lists, and its telephone-event PT."""
    try:
        sdp = parse_sdp(body.decode("utf-8", errors="replace"))
    except (ValueError, IndexError) as exc:
        raise SdpError(f"unparsable SDP: {exc}") from exc
    audio = sdp.audio
    addr = sdp.rtp_address
    if audio is None or addr is None or audio.port == 0:
        raise SdpError("SDP has no usable audio stream")
    if not 0 < audio.port < 65536:
        raise SdpError(f"audio port {audio.port} out of range")
    try:
        ipaddress.ip_address(addr[0])
    except ValueError:
        # a host name would be resolved by the socket, blocking the event loop for every 20 ms frame
        raise SdpError(f"audio address {addr[0]!r} is not an IP address") from None
    chosen: int | None = None
    for fmt in audio.formats:
        if fmt.isdigit() and int(fmt) in offered:
            chosen = int(fmt)
            break
    if chosen is None:
        raise SdpError(f"no common codec in {audio.formats}")
    dtmf: int | None = None
    for codec in audio.codecs:
        if codec.encoding_name.lower() == "telephone-event" and codec.clock_rate == 8000:
            dtmf = codec.payload_type
    return RemoteMedia(addr=(addr[0], addr[1]), payload_type=chosen, dtmf_payload_type=dtmf,
                       direction=audio.direction)
