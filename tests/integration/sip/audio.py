"""Audio helpers for SIP interop tests (moved to :mod:`tanfang.demo.audio`; re-exported here)."""

from tanfang.demo.audio import best_correlation, read_wav, silence_wav, speech_wav, wav_duration, write_wav

__all__ = ["best_correlation", "read_wav", "silence_wav", "speech_wav", "wav_duration", "write_wav"]
