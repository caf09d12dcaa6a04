"""Telephony: SIP user agent, RTP/G.711, DTMF, TTS prompt cache, Vosk ASR, call runner, dialer."""
