"""WeChat Official Account: callback, async API client, family binding, alerts."""
