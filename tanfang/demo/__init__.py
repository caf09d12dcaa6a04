"""``tanfang demo``: a small village of baresip phones on 127.0.0.1, a local WeChat stand-in, and a
real round of check-ins through the whole system. Also the reusable SIP peer launcher (``peers``)."""
