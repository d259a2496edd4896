// A real browser signs in to examples/web-app through tessera serve:
// Debian's chromium driven by playwright-core. The web app redirects to
// the login page, the password is typed, consent is given, the browser
// lands back signed in, loads items from store-api with the access token,
// and logs out; then a second sign-in is ended from the command line and
// the web app hears it through back-channel logout. Screenshots of every
// page, on a desktop and a phone, go to target/browser/.
// Usage: node signin.mjs TARGET_DIR   (the debug binaries are in it)
// Prints one line per check and a closing "N passed, N failed" line.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, devices } from "playwright-core";

const target = process.argv[2];
const bin = (name) => join(target, "debug", name);
const shots = join(target, "browser");
mkdirSync(shots, { recursive: true });
const results = { passed: 0, failed: 0 };
function check(name, ok, detail = "") {
  results[ok ? "passed" : "failed"]++;
  console.log((ok ? "ok   " : "FAIL ") + name + (ok ? "" : `: ${detail}`));
}

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

const children = [];
function start(cmd, args, env, pattern) {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, { cwd: dir, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
    children.push(proc);
    let out = "";
    proc.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    // A child that never says it listens fails the run instead of hanging it.
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`${cmd} did not start within 60 s`));
    }, 60_000);
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited ${code}`));
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), "tessera-browser-"));
const tessera = (args, input) => execFileSync(bin("tessera"), args, { cwd: dir, encoding: "utf8", input });

const webPort = await freePort();
const web = `http://127.0.0.1:${webPort}`;
const added = JSON.parse(
  tessera([
    "client", "add", "Example Shop",
    "--grant", "authorization_code", "--grant", "refresh_token",
    "--redirect-uri", `${web}/callback`,
    "--post-logout-redirect-uri", `${web}/`,
    "--backchannel-logout-uri", `${web}/backchannel`,
    "--scope", "openid", "--scope", "profile", "--scope", "email",
    "--scope", "offline_access", "--scope", "items:read",
    "--audience", "store-api", "--json",
  ]),
);
tessera(["user", "add", "alice", "--password-stdin", "--scope", "items:read", "--name", "Alice Liddell", "--email", "alice@example.com"], "wonderland-42\n");

let browser;
try {
  const issuer = "http://" + (await start(bin("tessera"), ["serve", "--listen", "127.0.0.1:0"], { TESSERA_LOG: "warn" }, /tessera: listening (\S+)/));
  const api = "http://" + (await start(bin("store-api"), ["--listen", "127.0.0.1:0", "--issuer", issuer, "--database-url", `sqlite://${dir}/store.db?mode=rwc`], {}, /store-api: listening (\S+)/));
  await start(bin("web-app"), ["--listen", `127.0.0.1:${webPort}`, "--issuer", issuer, "--client-id", added.client_id, "--store-api", api],
    { WEB_APP_CLIENT_SECRET: added.client_secret }, /web-app: listening (\S+)/);

  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  const phone = await browser.newContext({ ...devices["Pixel 7"] });
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await desktop.newPage();
  const jsErrors = [];
  page.on("pageerror", (e) => jsErrors.push(String(e)));

  await page.goto(web);
  await page.click("#sign-in");
  await page.waitForURL((u) => u.pathname === "/login");
  check("the web app sends the browser to the login page", page.url().startsWith(issuer + "/login"));
  await page.screenshot({ path: join(shots, "login-desktop.png") });
  const loginUrl = page.url();

  // The same login page on a phone (its own browser, its own cookie).
  const phonePage = await phone.newPage();
  await phonePage.goto(web);
  await phonePage.click("#sign-in");
  await phonePage.waitForURL((u) => u.pathname === "/login");
  await phonePage.screenshot({ path: join(shots, "login-phone.png") });
  const fits = await phonePage.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
  check("the login page fits a phone's width", fits);

  // A wrong password first: the generic message, the same page.
  await page.fill("#username", "alice");
  await page.fill("#password", "not-it");
  await page.click("button[type=submit]");
  check("a wrong password shows a generic error", (await page.textContent(".alert"))?.includes("Wrong username or password"));
  await page.screenshot({ path: join(shots, "login-error-desktop.png") });

  // Keyboard only: type, Enter.
  await page.fill("#password", "");
  await page.focus("#password");
  await page.keyboard.type("wonderland-42");
  await page.keyboard.press("Enter");
  await page.waitForURL((u) => u.pathname === "/consent");
  check("the login leads to the consent page", true);
  await page.screenshot({ path: join(shots, "consent-desktop.png") });
  const scopes = await page.locator(".scopes li").count();
  check("the consent page lists the scopes in words", scopes === 5, `${scopes}`);

  // The phone's consent page too.
  await phonePage.fill("#username", "alice");
  await phonePage.fill("#password", "wonderland-42");
  await phonePage.click("button[type=submit]");
  await phonePage.waitForURL((u) => u.pathname === "/consent");
  await phonePage.screenshot({ path: join(shots, "consent-phone.png"), fullPage: true });

  await page.click("button[value=allow]");
  await page.waitForURL((u) => u.origin === web && u.pathname === "/");
  check("allowing lands back in the web app, signed in", (await page.textContent("#signed-in"))?.includes("Alice Liddell"));
  await page.screenshot({ path: join(shots, "web-app-signed-in.png") });

  await page.click("#load-items");
  await page.waitForSelector("#items");
  check("the web app calls store-api with the access token", (await page.textContent("#items")).startsWith("200"), await page.textContent("#items"));
  await page.click("#refresh");
  check("the web app refreshes its tokens", (await page.textContent("#message"))?.includes("Tokens refreshed"));

  await page.click("#logout");
  await page.waitForURL((u) => u.origin === web && u.pathname === "/");
  check("RP-initiated logout returns to the web app, signed out", await page.isVisible("#signed-out"));

  // Signed out at the provider too: the next sign-in asks for the password.
  await page.click("#sign-in");
  await page.waitForURL((u) => u.pathname === "/login");
  check("the provider's session ended with the logout", page.url().startsWith(issuer + "/login"));
  await page.fill("#username", "alice");
  await page.fill("#password", "wonderland-42");
  await page.click("button[type=submit]");
  // Consent is remembered: straight back to the app.
  await page.waitForURL((u) => u.origin === web && u.pathname === "/");
  check("a remembered consent is not asked again", await page.isVisible("#signed-in"));

  // An admin ends the session from the command line: back-channel logout.
  const sid = JSON.parse(tessera(["session", "list", "--user", "alice", "--json"]))[0].sid;
  tessera(["session", "end", sid]);
  let out = false;
  for (let i = 0; i < 50 && !out; i++) {
    await new Promise((r) => setTimeout(r, 200));
    await page.reload();
    out = await page.isVisible("#signed-out");
  }
  check("ending the session reaches the web app by back-channel logout", out);

  // A logout confirmation page (no id_token_hint) and an error page.
  await page.click("#sign-in");
  await page.waitForURL((u) => u.pathname === "/login");
  await page.fill("#username", "alice");
  await page.fill("#password", "wonderland-42");
  await page.click("button[type=submit]");
  await page.waitForURL((u) => u.origin === web);
  await page.goto(`${issuer}/oauth2/logout?client_id=${added.client_id}`);
  check("logout without a hint asks first", (await page.textContent("h1")) === "Sign out?");
  await page.screenshot({ path: join(shots, "logout-confirm-desktop.png") });
  await page.click("button[value=logout]");
  check("confirming signs out", (await page.textContent("h1")) === "You are signed out");
  await page.screenshot({ path: join(shots, "signed-out-desktop.png") });
  await page.goto(`${issuer}/oauth2/authorize?client_id=${added.client_id}&redirect_uri=https://evil.example.com/&response_type=code`);
  check("an unregistered redirect URI shows an error page", (await page.textContent("h1"))?.includes("not valid"));
  await page.screenshot({ path: join(shots, "error-desktop.png") });
  const expired = await page.goto(loginUrl);
  check("an old login page link has expired", expired.status() === 400);
  check("no script errors on any page", jsErrors.length === 0, jsErrors.join("; "));
} catch (e) {
  check("the browser flow ran to the end", false, e?.stack || String(e));
} finally {
  if (browser) await browser.close();
  // The data directory holds a master key and sealed signing keys: the
  // children are gone before it is removed.
  await Promise.all(
    children.map((c) => {
      const exited = new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once("exit", r)));
      c.kill("SIGTERM");
      return exited;
    }),
  );
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${results.passed} passed, ${results.failed} failed (screenshots in ${shots})`);
process.exit(results.failed ? 1 : 0);
