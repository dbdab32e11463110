"""Drives postmarker and the Python `resend` SDK with their tracking flags
against Postline (tests/suite/tracking_mail.rs).

Env: POSTLINE_URL, RESEND_API_URL, KEY, FROM, TO. Prints one JSON object.
"""
import json
import os
import urllib.error
import urllib.request

import resend
from postmarker.core import PostmarkClient

env = os.environ
resend.api_key = env["KEY"]
pm = PostmarkClient(server_token=env["KEY"], root_api_url=env["POSTLINE_URL"])
html = '<p><a href="https://shop.example/x">Shop</a></p>'
text = "Shop: https://shop.example/x"
base = {"From": env["FROM"], "To": env["TO"], "HtmlBody": html, "TextBody": text}
out = {}
out["pm_text"] = pm.emails.send(Subject="pm text", TrackOpens=True, TrackLinks="TextOnly", **base)
out["pm_none"] = pm.emails.send(Subject="pm none", TrackOpens=False, TrackLinks="None", **base)
out["pm_html"] = pm.emails.send(Subject="pm html", TrackLinks="HtmlOnly", **base)
# postmarker itself refuses a TrackLinks it does not know (an assert), so the
# wrong value goes over plain HTTP as another Postmark client would send it.
bad = urllib.request.Request(
    env["POSTLINE_URL"].rstrip("/") + "/email",
    data=json.dumps(dict(base, Subject="pm bad", TrackLinks="Sometimes")).encode(),
    headers={"X-Postmark-Server-Token": env["KEY"], "Content-Type": "application/json",
             "Accept": "application/json"},
)
try:
    urllib.request.urlopen(bad)
    out["pm_bad"] = {"status": 200}
except urllib.error.HTTPError as e:
    out["pm_bad"] = {"status": e.code, "body": json.loads(e.read())}
out["pm_batch"] = pm.emails.send_batch(dict(base, Subject="pm batch", TrackLinks="HtmlAndText"))
out["resend"] = resend.Emails.send({
    "from": env["FROM"], "to": [env["TO"]], "subject": "resend tracked", "html": html,
    "text": text, "open_tracking": True, "click_tracking": True,
})
print(json.dumps(out, default=str))
