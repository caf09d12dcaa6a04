"""Audio for calls: G.711, DTMF, end-of-speech detection, recordings, audio match (RTP in ``rtp``)."""
