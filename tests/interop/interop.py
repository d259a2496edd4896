"""Tokens and keys cross between tessera and libraries no one here wrote.

1. tessera generates a key and signs; PyJWT verifies (every algorithm
   PyJWT supports).
2. cryptography generates a key, PyJWT signs; tessera verifies with the
   PEM public key (and fails with exit 1 on a tampered token).
3. jwcrypto generates a key and signs; tessera verifies with its JWK.
Prints one line per check and a closing 'N passed, N failed' line.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jwt as jwcrypto_jwt

TESSERA = sys.argv[1]
ALGS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
        "PS512", "ES256", "ES384", "ES512", "EdDSA"]
results = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    results["passed" if ok else "failed"] += 1
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))


def tessera(*args, stdin=None, env=None):
    return subprocess.run([TESSERA, *args], input=stdin, capture_output=True,
                          text=True, env=env)


def claims():
    now = int(time.time())
    return {"iss": "https://interop.example", "sub": "alice", "aud": "api",
            "iat": now, "exp": now + 300}


def tessera_to_pyjwt(tmp, alg):
    key_path = os.path.join(tmp, f"{alg}.jwk")
    run = tessera("key", "generate", "--alg", alg, "-o", key_path)
    if run.returncode != 0:
        return check(f"tessera → PyJWT {alg}", False, run.stderr)
    run = tessera("token", "sign", "--key", key_path, "--iss", "https://interop.example",
                  "--sub", "alice", "--aud", "api", "--exp", "5m")
    token = run.stdout.strip()
    with open(key_path) as f:
        private_jwk = json.load(f)
    if alg.startswith("HS"):
        key = jwt.PyJWK(private_jwk).key
    else:
        public = json.loads(tessera("key", "public", key_path).stdout)
        key = jwt.PyJWK(public).key
    try:
        decoded = jwt.decode(token, key=key, algorithms=[alg], audience="api",
                             issuer="https://interop.example")
        check(f"tessera → PyJWT {alg}", decoded["sub"] == "alice", decoded)
    except Exception as e:  # noqa: BLE001 - report any library failure
        check(f"tessera → PyJWT {alg}", False, repr(e))


def private_key_for(alg):
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[alg]
    return ec.generate_private_key(curve)


def pyjwt_to_tessera(tmp, alg):
    name = f"PyJWT → tessera {alg}"
    if alg.startswith("HS"):
        secret = os.urandom({"HS256": 32, "HS384": 48, "HS512": 64}[alg]).hex()
        token = jwt.encode(claims(), secret, algorithm=alg)
        env = dict(os.environ, INTEROP_SECRET=secret)
        run = tessera("token", "verify", "--secret-env", "INTEROP_SECRET", "--alg", alg,
                      "--iss", "https://interop.example", "--aud", "api", token, env=env)
    else:
        private = private_key_for(alg)
        pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        token = jwt.encode(claims(), pem, algorithm=alg, headers={"kid": "py"})
        pub_path = os.path.join(tmp, f"py-{alg}.pem")
        with open(pub_path, "wb") as f:
            f.write(public_pem)
        run = tessera("token", "verify", "--key", pub_path, "--alg", alg,
                      "--iss", "https://interop.example", "--aud", "api", token)
        # A tampered payload must be refused with exit 1.
        head, body, sig = token.split(".")
        forged = jwt.utils.base64url_encode(json.dumps({**claims(), "sub": "admin"}).encode()).decode()
        bad = tessera("token", "verify", "--any-iss", "--any-aud", "--key", pub_path, "--alg", alg, f"{head}.{forged}.{sig}")
        check(f"PyJWT → tessera {alg} (tampered refused)", bad.returncode == 1, bad.stderr)
    ok = run.returncode == 0 and json.loads(run.stdout or "{}").get("sub") == "alice"
    check(name, ok, run.stderr or run.stdout)


def jwcrypto_to_tessera(tmp):
    for kty, params, alg in [("EC", {"crv": "P-256"}, "ES256"), ("RSA", {"size": 2048}, "PS256"),
                             ("OKP", {"crv": "Ed25519"}, "EdDSA")]:
        key = jwcrypto_jwk.JWK.generate(kty=kty, **params)
        token = jwcrypto_jwt.JWT(header={"alg": alg, "kid": key.thumbprint()}, claims=claims())
        token.make_signed_token(key)
        path = os.path.join(tmp, f"jwcrypto-{alg}.jwk")
        with open(path, "w") as f:
            f.write(key.export_public())
        run = tessera("token", "verify", "--any-iss", "--any-aud", "--key", path, "--alg", alg, token.serialize())
        ok = run.returncode == 0 and json.loads(run.stdout or "{}").get("sub") == "alice"
        check(f"jwcrypto → tessera {alg}", ok, run.stderr)
        thumb = tessera("key", "thumbprint", path).stdout.strip()
        check(f"jwcrypto thumbprint = tessera thumbprint ({kty})", thumb == key.thumbprint(),
              f"{thumb} != {key.thumbprint()}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for alg in ALGS:
            tessera_to_pyjwt(tmp, alg)
            pyjwt_to_tessera(tmp, alg)
        jwcrypto_to_tessera(tmp)
    print(f"interop: {results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


if __name__ == "__main__":
    main()
