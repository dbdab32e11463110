"""Checks Postline's OAuth issuer with independent libraries.

  interop.py verify BASE_URL TOKEN ISSUER AUDIENCE
      PyJWT fetches BASE_URL/.well-known/jwks.json, picks the key by `kid`
      and verifies the token (EdDSA only; iss, aud, exp, nbf, iat required).
      Prints the claims as JSON; exits 1 when verification fails.
  interop.py client BASE_URL CLIENT_ID CLIENT_SECRET
      requests-oauthlib's client credentials flow against BASE_URL/oauth/token,
      then GET BASE_URL/v1/emails with the token. Prints a JSON summary.
"""
import json
import os
import sys


def verify(base, token, issuer, audience):
    import jwt

    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        raise SystemExit(f"typ is {header.get('typ')!r}, not at+jwt")
    keys = jwt.PyJWKClient(base + "/.well-known/jwks.json", cache_keys=False)
    key = keys.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    print(json.dumps({"kid": header["kid"], "claims": claims}))


def client(base, client_id, secret):
    # Loopback test server over http: oauthlib refuses that by default.
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    from oauthlib.oauth2 import BackendApplicationClient
    from requests_oauthlib import OAuth2Session

    session = OAuth2Session(client=BackendApplicationClient(client_id=client_id))
    token = session.fetch_token(
        token_url=base + "/oauth/token", client_id=client_id, client_secret=secret
    )
    r = session.get(base + "/v1/emails")
    print(json.dumps({
        "token_type": token.get("token_type"),
        "scope": token.get("scope"),
        "expires_in": token.get("expires_in"),
        "status": r.status_code,
    }))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    try:
        {"verify": verify, "client": client}[mode](*args)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the Rust test reads the reason
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
