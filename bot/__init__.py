"""WeChat Official Account: callback (wechatpy crypto/parse), async API client, family binding, alerts.

Modules: ``wire`` (signatures, AES envelopes, guarded XML), ``callback`` (the ``/wechat`` route,
once-per-message answering), ``dedup``/``dbworker`` (dedup rows, batched DB work), ``flows``
(what the bot does with a message), ``bindings`` (one-time codes → bindings; the console calls
``issue_binding_code``), ``api`` (access token, template/subscription/customer-service
messages, media), ``notifier`` (the ``wechat`` Notifier and the daily digest), ``dialog_adapter``
(elders' check-ins through ``dialogs``), ``voice`` (AMR → Vosk), ``service`` (assembly from plain
parameters), ``testing`` (the WeChat-server simulator and fake API).
"""
