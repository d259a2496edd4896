"""tessera serve against an OAuth client no one here wrote.

authlib (OAuth2Session, over requests) fetches tokens with the
client_credentials grant (client_secret_basic and client_secret_post) and
the password grant, refreshes, introspects and revokes; it signs a person
in with the authorization code flow (OAuth2Session with
code_challenge_method='S256', through the real login and consent pages);
PyJWT's PyJWKClient verifies every access token, and the ID token, against
the server's JWKS URL. authlib's PrivateKeyJWT authenticates a client with
its default (one-hour) assertions, and requests reads the revocation feed
as any server-sent-events client would.
Prints one line per check and a closing 'N passed, N failed' line.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError

TESSERA = sys.argv[1]
results = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    results["passed" if ok else "failed"] += 1
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))


def tessera(cwd, *args, stdin=None):
    out = subprocess.run([TESSERA, *args], cwd=cwd, input=stdin, capture_output=True,
                         text=True, check=True)
    return out.stdout


def start(cwd):
    """The server, its warnings kept in serve.log in `cwd`."""
    env = dict(os.environ, TESSERA_LOG="warn")
    with open(os.path.join(cwd, "serve.log"), "w") as log:
        proc = subprocess.Popen([TESSERA, "serve", "--listen", "127.0.0.1:0"], cwd=cwd,
                                stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("tessera: listening "):
            return proc, "http://" + line.split()[2]
    raise RuntimeError("tessera serve did not start")


def verify(token, base, audience):
    """A resource server's check: only the JWKS URL, PyJWT's client."""
    jwks = jwt.PyJWKClient(base + "/.well-known/jwks.json")
    key = jwks.get_signing_key_from_jwt(token)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=audience,
                        issuer=base, options={"require": ["exp", "iat", "sub", "jti"]})
    return header, claims


def hidden(html, name):
    return re.search(f'name="{name}" value="([^"]*)"', html).group(1)


def code_flow(base, meta, app):
    """authlib's OAuth2Session with PKCE S256; the pages through requests."""
    redirect_uri = "http://127.0.0.1:9/callback"
    rp = OAuth2Session(app["client_id"], app["client_secret"], scope="openid email orders:read",
                       redirect_uri=redirect_uri, code_challenge_method="S256")
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    url, state = rp.create_authorization_url(meta["authorization_endpoint"],
                                             code_verifier=verifier, nonce=nonce)
    browser = requests.Session()
    r = browser.get(url, allow_redirects=False, timeout=10)
    login = browser.get(base + r.headers["location"], timeout=10)
    r = browser.post(base + "/login", allow_redirects=False, timeout=10, data={
        "request": hidden(login.text, "request"), "csrf_token": hidden(login.text, "csrf_token"),
        "username": "alice", "password": "correct horse battery"})
    callback = r.headers.get("location", "")
    check("a first-party client skips consent", callback.startswith(redirect_uri), r.status_code)
    token = rp.fetch_token(meta["token_endpoint"], authorization_response=callback,
                           code_verifier=verifier)
    jwks = jwt.PyJWKClient(meta["jwks_uri"])
    key = jwks.get_signing_key_from_jwt(token["id_token"])
    claims = jwt.decode(token["id_token"], key.key, algorithms=["RS256"], audience=app["client_id"],
                        issuer=base)
    check("authlib's code flow gets an RS256 ID token with the nonce",
          claims.get("nonce") == nonce and claims.get("sid"), claims)
    info = requests.get(meta["userinfo_endpoint"], timeout=10,
                        headers={"Authorization": "Bearer " + token["access_token"]}).json()
    check("userinfo for the code flow's token", info.get("email") == "alice@example.com"
          and info.get("sub") == claims["sub"], info)
    try:
        rp.fetch_token(meta["token_endpoint"], authorization_response=callback,
                       code_verifier=verifier)
        check("a code works once", False, "a second token was issued")
    except OAuthError as e:
        check("a code works once", e.error == "invalid_grant", e.error)


def private_key_jwt(d, base, token_url):
    """authlib's PrivateKeyJWT, as its users write it: an RSA key, the
    library's default assertion lifetime (an hour)."""
    from authlib.oauth2.rfc7523 import PrivateKeyJWT
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"use": "sig", "alg": "RS256", "kid": "py-1"})
    path = os.path.join(d, "py-jwks.json")
    with open(path, "w") as f:
        json.dump({"keys": [public]}, f)
    client = json.loads(tessera(d, "client", "add", "py-jwt", "--jwks", path,
                                "--scope", "orders:read", "--json"))
    s = OAuth2Session(client["client_id"], pem,
                      token_endpoint_auth_method="private_key_jwt")
    s.register_client_auth_method(PrivateKeyJWT(token_url, alg="RS256"))
    try:
        token = s.fetch_token(token_url, grant_type="client_credentials")
        _, claims = verify(token["access_token"], base, base)
        check("authlib's PrivateKeyJWT with its default one-hour assertions",
              claims["client_id"] == client["client_id"], claims)
    except OAuthError as e:
        check("authlib's PrivateKeyJWT with its default one-hour assertions", False, e.error)


def revocation_feed(d, base, token_url, user_token, user_client):
    """The feed read by a plain HTTP client: backlog, ready, then the
    revocation of a token revoked while the stream is open."""
    feed = json.loads(tessera(d, "client", "add", "feed", "--scope", "revocations:read",
                              "--json"))
    s = OAuth2Session(feed["client_id"], feed["client_secret"])
    token = s.fetch_token(token_url, grant_type="client_credentials")["access_token"]
    r = requests.get(base + "/oauth2/revocations", stream=True, timeout=10,
                     headers={"Authorization": "Bearer " + token,
                              "Accept": "text/event-stream"})
    check("the feed is a text/event-stream",
          r.status_code == 200 and r.headers["content-type"] == "text/event-stream",
          (r.status_code, r.headers))
    lines = r.iter_lines(decode_unicode=True)
    event = {}
    events = []
    for line in lines:
        if line == "":
            events.append(event)
            if event.get("event") == "ready":
                break
            event = {}
            continue
        field, _, value = line.partition(":")
        event[field] = value.lstrip(" ")
    check("the feed sends its backlog, then ready", events and events[-1]["event"] == "ready",
          events)
    jti = jwt.decode(user_token, options={"verify_signature": False})["jti"]
    OAuth2Session(user_client, token_endpoint_auth_method="none").revoke_token(
        base + "/oauth2/revoke", token=user_token)
    event = {}
    for line in lines:
        if line == "":
            break
        field, _, value = line.partition(":")
        event[field] = value.lstrip(" ")
    data = json.loads(event.get("data", "{}"))
    check("a revocation arrives on the open stream with an id",
          event.get("event") == "revocation" and event.get("id", "").isdigit()
          and data == {"kind": "token", "jti": jti, "until": data.get("until")}, event)
    r.close()
    unauthorized = requests.get(base + "/oauth2/revocations", timeout=10)
    check("the feed needs a token", unauthorized.status_code == 401, unauthorized.status_code)
    # A subscriber left connected: the shutdown must not wait for it.
    return requests.get(base + "/oauth2/revocations", stream=True, timeout=10,
                        headers={"Authorization": "Bearer " + token})


def main():
    with tempfile.TemporaryDirectory() as d:
        svc = json.loads(tessera(d, "client", "add", "svc", "--scope", "orders:read",
                                 "--scope", "orders:write", "--audience", "orders-api", "--json"))
        web = json.loads(tessera(d, "client", "add", "web", "--grant", "password",
                                 "--grant", "refresh_token", "--public", "--scope", "orders:read",
                                 "--json"))
        tessera(d, "user", "add", "alice", "--password-stdin", "--scope", "orders:read",
                "--email", "alice@example.com", stdin="correct horse battery\n")
        app = json.loads(tessera(d, "client", "add", "py-app", "--grant", "authorization_code",
                                 "--redirect-uri", "http://127.0.0.1:9/callback",
                                 "--scope", "openid", "--scope", "email", "--scope", "orders:read",
                                 "--first-party", "--json"))
        proc, base = start(d)
        try:
            meta = requests.get(base + "/.well-known/oauth-authorization-server", timeout=10).json()
            token_url = meta["token_endpoint"]
            check("metadata names the token endpoint", token_url == base + "/oauth2/token", meta)

            for method in ["client_secret_basic", "client_secret_post"]:
                s = OAuth2Session(svc["client_id"], svc["client_secret"], scope="orders:read",
                                  token_endpoint_auth_method=method)
                token = s.fetch_token(token_url, grant_type="client_credentials")
                header, claims = verify(token["access_token"], base, "orders-api")
                check(f"client_credentials with {method}",
                      header.get("typ") == "at+jwt" and claims["scope"] == "orders:read"
                      and claims["client_id"] == svc["client_id"], (header, claims))

            s = OAuth2Session(svc["client_id"], "wrong-secret")
            try:
                s.fetch_token(token_url, grant_type="client_credentials")
                check("a wrong secret is refused", False, "a token was issued")
            except OAuthError as e:
                check("a wrong secret is refused", e.error == "invalid_client", e.error)

            user = OAuth2Session(web["client_id"], token_endpoint_auth_method="none",
                                 scope="orders:read")
            first = user.fetch_token(token_url, username="alice",
                                     password="correct horse battery")
            _, claims = verify(first["access_token"], base, base)
            check("password grant", "refresh_token" in first and "auth_time" in claims, first)

            second = user.refresh_token(token_url, refresh_token=first["refresh_token"])
            _, claims = verify(second["access_token"], base, base)
            check("refresh rotates the refresh token",
                  second["refresh_token"] != first["refresh_token"] and claims["scope"] == "orders:read",
                  second)

            introspector = OAuth2Session(svc["client_id"], svc["client_secret"])
            info = introspector.introspect_token(base + "/oauth2/introspect",
                                                 token=second["refresh_token"]).json()
            check("another client's refresh token introspects as inactive",
                  info == {"active": False}, info)

            try:
                user.refresh_token(token_url, refresh_token=first["refresh_token"])
                check("a reused refresh token is refused", False, "it was accepted")
            except OAuthError as e:
                check("a reused refresh token is refused", e.error == "invalid_grant", e.error)
            try:
                user.refresh_token(token_url, refresh_token=second["refresh_token"])
                check("reuse revoked the whole family", False, "its newest token was accepted")
            except OAuthError as e:
                check("reuse revoked the whole family", e.error == "invalid_grant", e.error)

            third = user.fetch_token(token_url, username="alice", password="correct horse battery")
            info = introspector.introspect_token(base + "/oauth2/introspect",
                                                 token=third["access_token"]).json()
            check("a live access token introspects as active, with its claims",
                  info.get("active") is True and info.get("client_id") == web["client_id"]
                  and info.get("username") == "alice" and info.get("scope") == "orders:read",
                  info)
            revoked = user.revoke_token(base + "/oauth2/revoke", token=third["access_token"])
            check("revocation answers 200", revoked.status_code == 200, revoked.status_code)
            info = introspector.introspect_token(base + "/oauth2/introspect",
                                                 token=third["access_token"]).json()
            check("a revoked access token is inactive", info == {"active": False}, info)
            fourth = user.fetch_token(token_url, username="alice", password="correct horse battery")
            subscriber = revocation_feed(d, base, token_url, fourth["access_token"],
                                         web["client_id"])
            private_key_jwt(d, base, token_url)
            code_flow(base, meta, app)
        finally:
            # No timing asserted (a busy CI machine is slow): only that the
            # server stops, well within the bound, and says it stopped well.
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with open(os.path.join(d, "serve.log")) as log:
                warnings = log.read()
            print(warnings, end="")
            # The feed's stream ends with the shutdown: it is not a request
            # left running until the grace period ran out.
            check("SIGTERM stops the server cleanly, a feed subscriber connected",
                  proc.returncode == 0 and "still running" not in warnings,
                  (proc.returncode, warnings))
    print(f"{results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


main()
