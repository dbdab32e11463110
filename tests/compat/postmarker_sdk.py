"""Drives postmarker (PyPI) against Postline (tests/suite/compat.rs).

Env: POSTLINE_URL (root URL), KEY, FROM, TO. Prints one JSON object.
"""
import json
import os

from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError

env = os.environ
client = PostmarkClient(server_token=env["KEY"], root_api_url=env["POSTLINE_URL"])
out = {}
out["sent"] = client.emails.send(
    From=env["FROM"], To=[env["TO"], "other@dest.example"], Subject="postmarker",
    TextBody="hi", Headers={"X-Campaign": "py"}, Tag="py",
)
out["batch"] = client.emails.send_batch(
    {"From": env["FROM"], "To": env["TO"], "Subject": "pmk batch 1", "TextBody": "one"},
    {"From": env["FROM"], "To": env["TO"], "Subject": "pmk batch 2", "TextBody": "two"},
)
# One bad message in the middle: a 200 with one entry per message.
out["mixed"] = client.emails.send_batch(
    {"From": env["FROM"], "To": env["TO"], "Subject": "pmk mixed 1", "TextBody": "one"},
    {"From": "not an address", "To": env["TO"], "Subject": "pmk mixed 2", "TextBody": "two"},
    {"From": env["FROM"], "To": env["TO"], "Subject": "pmk mixed 3", "TextBody": "three"},
)
try:
    client.emails.send(From="not an address", To=env["TO"], Subject="x", TextBody="x")
except ClientError as e:
    out["invalid"] = {"code": e.error_code, "message": str(e)}
print(json.dumps(out, default=str))
