// tessera serve against openid-client (panva; the certified relying-party
// library for Node.js): discovery, an authorization URL with PKCE (S256),
// state and nonce, login and consent through the real pages (driven over
// HTTP with a cookie jar), authorizationCodeGrant with all its ID token
// checks, userinfo, refresh, RP-initiated logout; a back-channel logout
// token received and verified with panva's jose; private_key_jwt with an
// Ed25519 key, and a wrong secret's error as openid-client reports it.
// Usage: node oidc.mjs path/to/tessera
// Prints one line per check and a closing "N passed, N failed" line.

import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as client from "openid-client";
import * as jose from "jose";

const tessera = process.argv[2];
const results = { passed: 0, failed: 0 };
function check(name, ok, detail = "") {
  results[ok ? "passed" : "failed"]++;
  console.log((ok ? "ok   " : "FAIL ") + name + (ok ? "" : `: ${detail}`));
}

const dir = mkdtempSync(join(tmpdir(), "tessera-oidc-"));
const run = (...args) => execFileSync(tessera, args, { cwd: dir, encoding: "utf8" });

// The relying party's back-channel endpoint: keeps what it receives.
const received = [];
const rp = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    received.push({ path: req.url, type: req.headers["content-type"], body });
    res.writeHead(200, { "cache-control": "no-store" }).end();
  });
});
await new Promise((r) => rp.listen(0, "127.0.0.1", r));
const rpBase = `http://127.0.0.1:${rp.address().port}`;
const redirectUri = `${rpBase}/callback`;

function start() {
  return new Promise((resolve, reject) => {
    const proc = spawn(tessera, ["serve", "--listen", "127.0.0.1:0"], {
      cwd: dir,
      env: { ...process.env, TESSERA_LOG: "warn" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    proc.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/tessera: listening (\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, base: `http://${m[1]}` });
      }
    });
    // A server that never says it listens fails the run instead of hanging it.
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error("tessera serve did not start within 60 s"));
    }, 60_000);
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`tessera serve exited ${code}`));
    });
  });
}

const added = JSON.parse(
  run(
    "client", "add", "Example Web App",
    "--grant", "authorization_code", "--grant", "refresh_token",
    "--redirect-uri", redirectUri,
    "--post-logout-redirect-uri", `${rpBase}/signed-out`,
    "--backchannel-logout-uri", `${rpBase}/backchannel`,
    "--scope", "openid", "--scope", "profile", "--scope", "email", "--scope", "offline_access",
    "--json",
  ),
);
execFileSync(tessera, ["user", "add", "alice", "--password-stdin", "--email", "alice@example.com", "--name", "Alice Liddell"], {
  cwd: dir,
  input: "wonderland-42\n",
});
const { proc, base } = await start();

// A browser: a cookie jar over fetch, redirects by hand.
const jar = new Map();
async function browse(url, init = {}) {
  const headers = new Headers(init.headers || {});
  if (jar.size) headers.set("cookie", [...jar].map(([k, v]) => `${k}=${v}`).join("; "));
  const res = await fetch(url, { ...init, headers, redirect: "manual" });
  for (const c of res.headers.getSetCookie()) {
    const [pair, ...attrs] = c.split(";");
    const [k, v] = pair.split("=");
    if (!v || attrs.some((a) => a.trim().toLowerCase() === "max-age=0")) jar.delete(k);
    else jar.set(k, v);
  }
  return res;
}
const hidden = (html, name) => html.match(new RegExp(`name="${name}" value="([^"]*)"`))[1];
const form = (fields) => ({
  method: "POST",
  headers: { "content-type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams(fields).toString(),
});

try {
  const config = await client.discovery(new URL(base), added.client_id, added.client_secret, undefined, {
    execute: [client.allowInsecureRequests],
  });
  const meta = config.serverMetadata();
  check("discovery names the code flow with S256", meta.code_challenge_methods_supported?.includes("S256") && meta.authorization_endpoint === `${base}/oauth2/authorize`);

  const verifier = client.randomPKCECodeVerifier();
  const challenge = await client.calculatePKCECodeChallenge(verifier);
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: "openid profile email offline_access",
    code_challenge: challenge,
    code_challenge_method: "S256",
    state,
    nonce,
  });

  let res = await browse(url);
  const loginPath = res.headers.get("location");
  check("authorize sends the browser to the login page", res.status === 303 && loginPath.startsWith("/login"), `${res.status} ${loginPath}`);
  res = await browse(new URL(loginPath, base));
  let html = await res.text();
  res = await browse(new URL("/login", base), form({
    request: hidden(html, "request"),
    csrf_token: hidden(html, "csrf_token"),
    username: "alice",
    password: "wonderland-42",
  }));
  const consentPath = res.headers.get("location");
  check("the login leads to consent", res.status === 303 && consentPath.startsWith("/consent"), `${res.status} ${consentPath}`);
  res = await browse(new URL(consentPath, base));
  html = await res.text();
  check("the consent page names the client", html.includes("Example Web App"));
  res = await browse(new URL("/consent", base), form({
    request: hidden(html, "request"),
    csrf_token: hidden(html, "csrf_token"),
    decision: "allow",
  }));
  const callback = new URL(res.headers.get("location"));
  check("consent sends the code to the redirect URI with iss", callback.origin + callback.pathname === redirectUri && callback.searchParams.get("iss") === base);

  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  check("authorizationCodeGrant validates the ID token", claims?.nonce === nonce && typeof claims.sid === "string" && claims.aud === added.client_id);
  check("a refresh token comes with offline_access", typeof tokens.refresh_token === "string");

  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  check("userinfo returns the profile and email claims", info.email === "alice@example.com" && info.name === "Alice Liddell" && info.preferred_username === "alice", JSON.stringify(info));

  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  check("refreshTokenGrant rotates the refresh token", refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token);

  const logout = client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: `${rpBase}/signed-out`,
    state: "bye",
  });
  res = await browse(logout);
  check("RP-initiated logout returns to the registered URI with state", res.status === 303 && res.headers.get("location") === `${rpBase}/signed-out?state=bye`, `${res.status} ${res.headers.get("location")}`);

  // The back-channel logout token arrives within seconds.
  for (let i = 0; i < 100 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  const delivery = received[0];
  check("a back-channel logout token is POSTed", delivery?.path === "/backchannel" && delivery.type === "application/x-www-form-urlencoded");
  const logoutToken = new URLSearchParams(delivery?.body || "").get("logout_token");
  const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
  const { payload, protectedHeader } = await jose.jwtVerify(logoutToken, jwks, {
    issuer: base,
    audience: added.client_id,
    typ: "logout+jwt",
  });
  check("the logout token verifies (typ logout+jwt, events, sid, sub, jti)",
    payload.events?.["http://schemas.openid.net/event/backchannel-logout"] !== undefined &&
      payload.sid === claims.sid && payload.sub === claims.sub && typeof payload.jti === "string" &&
      protectedHeader.alg === "RS256" && payload.nonce === undefined);

  // The session's refresh tokens died with it.
  let refusal = "";
  try {
    await client.refreshTokenGrant(config, refreshed.refresh_token);
  } catch (e) {
    refusal = e.error || e.code || String(e);
  }
  check("the logout revoked the session's refresh tokens", refusal === "invalid_grant", refusal);

  // private_key_jwt with an Ed25519 key: openid-client's assertions carry
  // the fully-specified alg (RFC 9864) its version prefers.
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const { kty, crv, x } = await crypto.subtle.exportKey("jwk", pair.publicKey);
  const jwksPath = join(dir, "node-ed25519.json");
  writeFileSync(jwksPath, JSON.stringify({ keys: [{ kty, crv, x, kid: "node-1", use: "sig" }] }));
  const service = JSON.parse(run("client", "add", "node-service", "--jwks", jwksPath, "--scope", "reports:read", "--json"));
  let signedAlg = "";
  const serviceConfig = await client.discovery(new URL(base), service.client_id, undefined,
    client.PrivateKeyJwt({ key: pair.privateKey, kid: "node-1" }, {
      [client.modifyAssertion]: (header) => { signedAlg = header.alg; },
    }),
    { execute: [client.allowInsecureRequests] });
  const granted = await client.clientCredentialsGrant(serviceConfig, { scope: "reports:read" });
  check(`private_key_jwt with an Ed25519 key (alg ${signedAlg})`, typeof granted.access_token === "string" && ["Ed25519", "EdDSA"].includes(signedAlg), signedAlg);

  // A wrong secret sent in the body: openid-client reports the OAuth error
  // code (no Basic challenge to trip on).
  const wrong = await client.discovery(new URL(base), added.client_id, undefined, client.ClientSecretPost("wrong"), {
    execute: [client.allowInsecureRequests],
  });
  let wrongError = "";
  try {
    await client.clientCredentialsGrant(wrong, {});
  } catch (e) {
    wrongError = e.error || e.code || String(e);
  }
  check("a wrong client_secret_post is reported as invalid_client", wrongError === "invalid_client", wrongError);
} catch (e) {
  check("the flow ran to the end", false, e?.stack || String(e));
} finally {
  // The data directory holds a master key and sealed signing keys: the
  // server is gone before it is removed.
  const exited = new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once("exit", r)));
  proc.kill("SIGTERM");
  await exited;
  rp.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${results.passed} passed, ${results.failed} failed`);
process.exit(results.failed ? 1 : 0);
