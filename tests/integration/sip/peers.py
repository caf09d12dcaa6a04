"""Real SIP peers for the tests: the launcher lives in :mod:`tanfang.demo.peers` (the demo village
uses it too); this module re-exports it so existing tests and benches keep their imports."""

from tanfang.demo.peers import (
    BARESIP_MODULES,
    HOST,
    KAMAILIO_MODULES,
    BaresipPeer,
    KamailioProxy,
    best_correlation,
    free_port,
    have_baresip,
    have_kamailio,
    read_wav,
    running,
    silence_wav,
    speech_wav,
    wav_duration,
    write_wav,
)

__all__ = [
    "BARESIP_MODULES",
    "HOST",
    "KAMAILIO_MODULES",
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
