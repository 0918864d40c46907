// The web UI in Debian's headless Chromium, against the whole system (`gozon identity`,
// `gozon payments`, `gozon orders`, `gozon gateway`, as `gozon run` starts them) on free ports,
// with its own databases and queues. Screenshots land in test-output/.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import net from "node:net";
import { chromium } from "playwright-core";

const root = new URL("../../", import.meta.url).pathname;
const bin = process.env.GOZON_BIN ?? `${root}target/debug/gozon`;
const output = `${root}test-output`;
const id = `gozon_test_browser_${Math.random().toString(36).slice(2, 10)}`;
const pg = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432";

const roles = {};
let env;
let browser;
let gateway;

function start(role) {
  roles[role] = spawn(bin, [role], { stdio: ["ignore", "inherit", "inherit"], env });
}

async function stop(role, signal) {
  const child = roles[role];
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill(signal);
  await exited;
}

const freePort = () =>
  new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

async function until(what, check, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  const [identity, orders, payments, gw] = [await freePort(), await freePort(), await freePort(), await freePort()];
  gateway = `http://127.0.0.1:${gw}`;
  env = {
    ...process.env,
    RUST_LOG: process.env.RUST_LOG ?? "warn",
    IDENTITY_LISTEN_ADDR: `127.0.0.1:${identity}`,
    IDENTITY_DATABASE_URL: `${pg}/${id}_identity`,
    AUTH_JWKS_URL: `http://127.0.0.1:${identity}/auth/jwks.json`,
    AUTH_REVOCATIONS_URL: `http://127.0.0.1:${identity}/auth/revoked`,
    GATEWAY_IDENTITY_URL: `http://127.0.0.1:${identity}`,
    ORDERS_LISTEN_ADDR: `127.0.0.1:${orders}`,
    PAYMENTS_LISTEN_ADDR: `127.0.0.1:${payments}`,
    GATEWAY_LISTEN_ADDR: `127.0.0.1:${gw}`,
    GATEWAY_ORDERS_URL: `http://127.0.0.1:${orders}`,
    GATEWAY_PAYMENTS_URL: `http://127.0.0.1:${payments}`,
    ORDERS_MESSAGE_KEYS_URL: `http://127.0.0.1:${orders}/messaging/keys`,
    AUTH_SIGNUPS_PER_CLIENT: "1000",
    PAYMENTS_MESSAGE_KEYS_URL: `http://127.0.0.1:${payments}/messaging/keys`,
    GATEWAY_UI_DIR: `${root}web`,
    ORDERS_DATABASE_URL: `${pg}/${id}_orders`,
    PAYMENTS_DATABASE_URL: `${pg}/${id}_payments`,
    ORDER_PAYMENTS_QUEUE: `${id}.order.payments`,
    PAYMENT_STATUS_QUEUE: `${id}.payment.status`,
    ORDER_REFUNDS_QUEUE: `${id}.order.refunds`,
    REFUND_STATUS_QUEUE: `${id}.refund.status`,
    AMQP_QUEUE_EXPIRES_MS: "600000",
  };
  for (const role of ["identity", "payments", "orders", "gateway"]) start(role);
  // Every service answers through the gateway (anonymous calls get 401: an answer).
  for (const probe of ["/auth/jwks.json", "/orders", "/payments/accounts/probe/balance"]) {
    await until(`the system (${probe})`, async () => [200, 401].includes((await fetch(`${gateway}${probe}`)).status), 60_000);
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
    ],
  });
  mkdirSync(output, { recursive: true });
});

after(async () => {
  await browser?.close();
  for (const role of ["gateway", "orders", "payments", "identity"]) await stop(role, "SIGTERM");
  for (const db of [`${id}_identity`, `${id}_orders`, `${id}_payments`]) {
    try {
      execFileSync("psql", [`${pg}/postgres`, "-qc", `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`]);
    } catch {}
  }
});

const text = (page, selector) => page.locator(selector).textContent();

/** Collects into `errors` what a page throws and whatever its Content-Security-Policy blocks. */
function watchErrors(page, errors) {
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => {
    if (/Content Security Policy/.test(message.text())) errors.push(message.text());
  });
}

/** Runs `steps`; if one fails, the failure carries the page's own log and a screenshot is kept. */
async function explainingFailure(page, steps) {
  try {
    await steps();
  } catch (error) {
    await page.screenshot({ path: `${output}/ui-failure.png`, fullPage: true }).catch(() => {});
    const log = await page.locator("#log").innerText({ timeout: 1_000 }).catch(() => "(unreadable)");
    error.message += `\nThe page's log (newest first; screenshot: test-output/ui-failure.png):\n${log}`;
    throw error;
  }
}

/** Signs up (or in) through the API and returns the bearer token, as another tab would. */
async function tokenOf(user, password) {
  const answer = await fetch(`${gateway}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: user, password }),
  });
  return (await answer.json()).token;
}

test("a person signs up, opens an account, deposits, watches one order paid and one cancelled, cancels the paid one and sees the money back, live; another person sees none of it", async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const consoleErrors = [];
  watchErrors(page, consoleErrors);
  await explainingFailure(page, async () => {
    await page.goto(`${gateway}/`);
    await page.evaluate(() => (window.__sameDocument = true));
    await page.screenshot({ path: `${output}/ui-signed-out.png`, fullPage: true });

    // Mistakes are explained in plain words next to the form.
    await page.getByLabel("User id").fill("not valid!");
    await page.getByLabel("Password").fill("alice-password");
    await page.getByRole("button", { name: "Sign up" }).click();
    assert.match(await text(page, "#sign-in-error"), /letters, digits/);
    await page.getByLabel("User id").fill("alice");
    await page.getByLabel("Password").fill("short");
    await page.getByRole("button", { name: "Sign up" }).click();
    assert.match(await text(page, "#sign-in-error"), /at least 8 characters/);

    // Keyboard only: type, Tab to the password, Enter signs in — and a stranger is refused.
    await page.getByLabel("User id").fill("alice");
    await page.getByLabel("Password").fill("alice-password");
    await page.getByRole("button", { name: "Sign in" }).press("Enter");
    await until("refused", async () => /Wrong user id or password/.test(await text(page, "#sign-in-error")));

    await page.getByLabel("Password").fill("alice-password");
    await page.getByRole("button", { name: "Sign up" }).click();
    await until("signed in", async () => (await text(page, "#who")) === "alice");
    const cookie = (await context.cookies()).find((c) => c.name === "gozon_session");
    assert.ok(cookie?.httpOnly, "the session cookie is HttpOnly");
    assert.equal(cookie.sameSite, "Strict");
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }));
    assert.doesNotMatch(stored, /eyJ/, "no token in web storage");
    assert.equal(await page.evaluate(() => document.cookie), "", "the token is out of the script's reach");

    await until("no account yet", async () => (await text(page, "#balance")) === "no account");
    await page.getByRole("button", { name: "Create account" }).click();
    await until("balance 0", async () => (await text(page, "#balance")) === "0.00 ₽");
    await until("live", async () => (await text(page, "#live")) === "live");

    await page.getByLabel("Deposit, ₽").fill("20");
    await page.getByLabel("Deposit, ₽").press("Enter");
    await until("balance 20", async () => (await text(page, "#balance")) === "20.00 ₽");

    // An amount that is not money is refused before it reaches the API.
    await page.getByLabel("Amount, ₽").fill("lots");
    await page.getByRole("button", { name: "Place order" }).click();
    assert.match(await text(page, "#order-error"), /positive amount/);

    // A double click places one order.
    await page.getByLabel("Amount, ₽").fill("15");
    await page.getByLabel("Description").fill("Gift");
    await page.getByRole("button", { name: "Place order" }).dblclick();
    await page.locator('.order[data-status="FINISHED"]').waitFor({ timeout: 20_000 });
    await until("balance 5 after payment", async () => (await text(page, "#balance")) === "5.00 ₽");

    await page.getByLabel("Amount, ₽").fill("10");
    await page.getByLabel("Description").fill("Too much");
    await page.getByRole("button", { name: "Place order" }).click();
    const cancelled = page.locator('.order[data-status="CANCELLED"]');
    await cancelled.waitFor({ timeout: 20_000 });
    assert.match(await cancelled.locator(".reason").textContent(), /not enough money/);
    assert.equal(await text(page, "#balance"), "5.00 ₽");

    const rows = await page.locator(".order .what").allTextContents();
    assert.deepEqual(rows, ["Too much", "Gift"], "newest first, the double click made one order");
    assert.equal(await cancelled.locator("button.cancel").count(), 0, "a cancelled order cannot be cancelled");

    // Cancelling the paid order (after a confirmation) gives its money back, live.
    const gift = page.locator(".order", { hasText: "Gift" });
    let confirmed = null;
    page.once("dialog", async (dialog) => {
      confirmed = dialog.message();
      await dialog.accept();
    });
    await gift.getByRole("button", { name: "Cancel" }).click();
    await page.locator('.order[data-status="REFUNDED"]').waitFor({ timeout: 20_000 });
    assert.match(confirmed, /Cancel order .* money will be returned/);
    await until("balance 20 after the refund", async () => (await text(page, "#balance")) === "20.00 ₽");
    assert.equal(await gift.locator(".badge").textContent(), "Refunded");
    await gift.getByRole("button", { name: "History" }).click();
    await until("its history shown", async () => (await gift.locator(".timeline li").count()) === 6);
    assert.deepEqual(
      await gift.locator(".timeline .event").allTextContents(),
      ["Placed", "Payment requested", "Paid", "Cancel requested", "Refund requested", "Money returned"],
    );

    // The live connection drops (the gateway dies); an order is placed and paid meanwhile. Once
    // the gateway is back, the page reconnects by itself and catches up.
    await stop("gateway", "SIGKILL");
    await until("the drop noticed", async () => (await text(page, "#live")) !== "live");
    start("gateway");
    await until("the gateway back", async () => (await fetch(`${gateway}/healthz`)).ok);
    const token = await tokenOf("alice", "alice-password");
    const auth = { authorization: `Bearer ${token}` };
    const placed = await fetch(`${gateway}/orders`, {
      method: "POST",
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({ amount: 300, description: "From another tab" }),
    }).then((r) => r.json());
    await until("paid elsewhere", async () => (await (await fetch(`${gateway}/orders/${placed.id}`, { headers: auth })).json()).status === "FINISHED");
    await page.locator(`.order[data-id="${placed.id}"][data-status="FINISHED"]`).waitFor({ timeout: 30_000 });
    await until("balance 17 after catching up", async () => (await text(page, "#balance")) === "17.00 ₽");
    assert.equal(await page.evaluate(() => window.__sameDocument), true, "no reload happened");
    assert.match(await text(page, "#log"), /paid/);

    await page.screenshot({ path: `${output}/ui-desktop.png`, fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: `${output}/ui-phone.png`, fullPage: true });

    // Signing out ends the session: the page is back to the form, the cookie is gone.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.locator("#sign-in-form").waitFor();
    assert.equal((await context.cookies()).find((c) => c.name === "gozon_session"), undefined);
    await page.reload();
    assert.equal(await page.locator("#account-card").isHidden(), true, "still signed out after a reload");

    // Another person, in a browser context of their own, sees nothing of alice's.
    const other = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const bobs = await other.newPage();
    watchErrors(bobs, consoleErrors);
    await bobs.goto(`${gateway}/`);
    await bobs.getByLabel("User id").fill("bob");
    await bobs.getByLabel("Password").fill("bob-password");
    await bobs.getByRole("button", { name: "Sign up" }).click();
    await until("bob signed in", async () => (await text(bobs, "#who")) === "bob");
    await until("bob's page loaded", async () => (await text(bobs, "#balance")) === "no account");
    assert.equal(await bobs.locator(".order").count(), 0, "none of alice's orders");
    const aliceBalance = await bobs.evaluate(async () => (await fetch("/payments/accounts/alice/balance")).status);
    assert.equal(aliceBalance, 403, "nor her balance");
    const aliceOrder = await bobs.evaluate(async (id) => (await fetch(`/orders/${id}`)).status, placed.id);
    assert.equal(aliceOrder, 404, "nor one of her orders by id");
    await bobs.screenshot({ path: `${output}/ui-another-user.png`, fullPage: true });

    assert.deepEqual(consoleErrors, []);
    await context.close();
    await other.close();
  });
});

test("the pages run under a policy that allows only the gateway's own files and no framing, and the API reference renders under it", async () => {
  const home = await fetch(`${gateway}/`);
  const policy = home.headers.get("content-security-policy");
  assert.match(policy, /default-src 'self'/);
  assert.match(policy, /frame-ancestors 'none'/);
  assert.equal(home.headers.get("x-content-type-options"), "nosniff");

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  watchErrors(page, errors);
  await page.goto(`${gateway}/api.html`);
  await until("the operations listed", async () => (await page.locator("#operations .op").count()) > 5);
  assert.ok((await page.locator("#schemas h3").count()) > 5, "the schemas listed");
  // A script the page did not load from the gateway is refused.
  await page.evaluate(() => {
    const script = document.createElement("script");
    script.textContent = "window.__injected = true";
    document.body.append(script);
  });
  assert.equal(await page.evaluate(() => window.__injected), undefined, "an inline script ran");
  assert.equal(errors.filter((e) => !/Content Security Policy/.test(e)).length, 0, errors.join("\n"));
  assert.equal(errors.length, 1, `only the injected script is refused: ${errors.join("\n")}`);
  await page.screenshot({ path: `${output}/ui-api-reference.png`, fullPage: true });
  await context.close();
});
