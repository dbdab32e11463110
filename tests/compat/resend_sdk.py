"""Drives the official Python `resend` SDK against Postline (tests/suite/compat.rs).

Env: RESEND_API_URL (set by the test, with a trailing slash on purpose), KEY,
FROM, TO, LATER, LATER2. Prints one JSON object of results.
"""
import json
import os

import resend

env = os.environ
resend.api_key = env["KEY"]
out = {}


def error_of(call):
    try:
        call()
    except resend.exceptions.ResendError as e:
        return {"code": e.code, "type": e.error_type, "message": e.message}
    return None


out["sent"] = resend.Emails.send({
    "from": env["FROM"], "to": [env["TO"]], "subject": "python resend", "text": "hi",
    "attachments": [
        {"filename": "bytes.txt", "content": list(b"python bytes")},
        {"filename": "b64.txt", "content": "cHl0aG9uIGJhc2U2NA=="},
    ],
})
out["batch"] = resend.Batch.send([
    {"from": env["FROM"], "to": env["TO"], "subject": "py batch 1", "text": "one"},
    {"from": env["FROM"], "to": env["TO"], "subject": "py batch 2", "text": "two"},
])
out["got"] = dict(resend.Emails.get(out["sent"]["id"]))
scheduled = resend.Emails.send({
    "from": env["FROM"], "to": env["TO"], "subject": "py scheduled", "text": "later",
    "scheduled_at": env["LATER"],
})
out["scheduled"] = scheduled
out["updated"] = dict(resend.Emails.update({"id": scheduled["id"], "scheduled_at": env["LATER2"]}))
out["got_scheduled"] = dict(resend.Emails.get(scheduled["id"]))
out["canceled"] = dict(resend.Emails.cancel(scheduled["id"]))
out["cancel_again"] = error_of(lambda: resend.Emails.cancel(scheduled["id"]))
out["invalid"] = error_of(lambda: resend.Emails.send(
    {"from": "not an address", "to": env["TO"], "subject": "x", "text": "x"}))
resend.api_key = "re_not_a_key"
out["bad_key"] = error_of(lambda: resend.Emails.send(
    {"from": env["FROM"], "to": env["TO"], "subject": "x", "text": "x"}))
print(json.dumps(out, default=str))
