// GoZon web UI: everything it shows comes from the API behind the gateway.
// Signing in sets an HttpOnly session cookie that the gateway accepts; this script never sees
// the token. It remembers only who is signed in (the user id), to restore the page after a
// reload; any 401 means the session is over and shows the sign-in form again.
// Live status: an EventSource on /orders/events (it sends the cookie); on every (re)connect the
// list is reloaded, so nothing missed while disconnected stays stale.

const $ = (id) => document.getElementById(id);
const USER_ID = /^[A-Za-z0-9._-]{1,64}$/;
const REASONS = {
  insufficient_funds: "not enough money on the account",
  account_not_found: "there is no account for this user",
  payment_timeout: "it was not paid in time",
  cancelled: "you cancelled it",
};

const BADGES = { NEW: "Paying…", FINISHED: "Paid", CANCELLED: "Cancelled", REFUNDING: "Refunding…", REFUNDED: "Refunded" };

const EVENTS = {
  placed: "Placed",
  payment_requested: "Payment requested",
  paid: "Paid",
  declined: "Payment declined",
  cancel_requested: "Cancel requested",
  refund_requested: "Refund requested",
  refunded: "Money returned",
  deadline_passed: "Payment deadline passed",
};

/** Histories the person opened, by order id; shown until closed, reloaded as the order moves. */
const histories = new Map();
/** The Idempotency-Key of each order's cancel, kept until that cancel succeeds. */
const cancelKeys = new Map();

let user = null;
const SIGNED_IN = "gozon.signed-in-as";
let events = null;
const orders = new Map();

// ---- money -------------------------------------------------------------------------------

/** "15", "15.5", "15,50" → kopecks; null if not a positive amount with at most 2 decimals. */
function parseRubles(text) {
  const match = /^\s*(\d{1,15})(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!match) return null;
  const kopecks = Number(match[1]) * 100 + Number((match[2] ?? "").padEnd(2, "0"));
  return kopecks > 0 && Number.isSafeInteger(kopecks) ? kopecks : null;
}

function rubles(kopecks) {
  const sign = kopecks < 0 ? "−" : "";
  const abs = Math.abs(kopecks);
  const whole = Math.floor(abs / 100).toLocaleString("ru-RU");
  return `${sign}${whole}.${String(abs % 100).padStart(2, "0")} ₽`;
}

// ---- API ----------------------------------------------------------------------------------

class ApiError extends Error {
  /** `type`: the problem's kind, `/problems/<name>` (see the API description), or about:blank. */
  constructor(status, detail, type = "about:blank") {
    super(detail);
    this.status = status;
    this.type = type;
  }
}

/** What each kind of problem means to the person; the English `detail` is for developers. */
const PROBLEMS = {
  "/problems/account-not-found": "There is no account for this user yet. Create it first.",
  "/problems/account-exists": "This account already exists.",
  "/problems/balance-overflow": "That deposit would make the balance too large.",
  "/problems/unauthenticated": "Your session has ended. Sign in again.",
  "/problems/wrong-credentials": "Wrong user id or password.",
  "/problems/user-id-taken": "This user id is taken. Sign in, or choose another.",
  "/problems/bad-password": "The password must be 8 to 256 characters.",
  "/problems/too-many-attempts": "Too many attempts. Wait a minute and try again.",
  "/problems/nothing-to-cancel": "This order cannot be cancelled any more.",
};

/** A random UUID (v4); `crypto.randomUUID` exists only on HTTPS and localhost. */
function uuid() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** `key`: the Idempotency-Key of a write, the same for every retry of one submitted form. */
async function api(method, path, body, { key } = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (key) headers["idempotency-key"] = key;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "the server cannot be reached");
  }
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, payload?.detail ?? `request failed (${response.status})`, payload?.type);
    if (response.status === 401 && !path.startsWith("/auth/")) signedOut("Your session has ended. Sign in again.");
    throw error;
  }
  return payload;
}

/**
 * Runs a form's write with the button disabled (a double click sends nothing twice) and one
 * Idempotency-Key per filled-in form: a retry after a failure reuses it, so a write that did
 * happen is not made again; the key is dropped once the write succeeded.
 */
async function submitOnce(form, write) {
  const button = form.querySelector('button[type="submit"]');
  if (button.disabled) return;
  button.disabled = true;
  form.dataset.key ??= uuid();
  try {
    await write(form.dataset.key);
    delete form.dataset.key;
  } finally {
    button.disabled = false;
  }
}

/** Turns an API problem into plain words for the person. */
function plain(error) {
  if (error.status === 0) return "Cannot reach GoZon. Is it running?";
  if (PROBLEMS[error.type]) return PROBLEMS[error.type];
  if (error.status === 401) return PROBLEMS["/problems/unauthenticated"];
  if (error.status >= 500) return "GoZon is having trouble right now. Try again in a moment.";
  return error.message;
}

// ---- log ----------------------------------------------------------------------------------

function log(text, kind = "info") {
  const item = document.createElement("li");
  item.className = kind;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  item.append(time, " ", text);
  $("log").prepend(item);
}

function showError(id, text) {
  $(id).textContent = text ?? "";
}

// ---- who is signed in, balance -------------------------------------------------------------

/** Shows the page for `id` (signed in) or the sign-in form (`null`). */
async function show(id) {
  user = id;
  orders.clear();
  renderOrders();
  $("sign-in-card").hidden = id !== null;
  $("account-card").hidden = id === null;
  for (const card of document.querySelectorAll(".signed-in")) card.hidden = id === null;
  if (id === null) {
    events?.close();
    events = null;
    localStorage.removeItem(SIGNED_IN);
    $("balance").textContent = "—";
    return;
  }
  localStorage.setItem(SIGNED_IN, id);
  $("who").textContent = id;
  watch();
  await Promise.all([refreshBalance(), reloadOrders()]);
}

function signedOut(why) {
  if (user === null) return;
  show(null);
  showError("sign-in-error", why);
}

/** Reads the sign-in form; null (with the reason shown) if it cannot be right. */
function readCredentials() {
  const id = $("sign-in-user").value.trim();
  const password = $("sign-in-password").value;
  showError("sign-in-error", "");
  $("sign-in-user").toggleAttribute("aria-invalid", !USER_ID.test(id));
  $("sign-in-password").toggleAttribute("aria-invalid", password.length < 8);
  if (!USER_ID.test(id)) {
    showError("sign-in-error", "Enter a user id of 1–64 characters: letters, digits, dot, underscore or dash.");
    return null;
  }
  if ([...password].length < 8) {
    showError("sign-in-error", "The password must be at least 8 characters.");
    return null;
  }
  return { user_id: id, password };
}

async function signIn(path) {
  const credentials = readCredentials();
  if (!credentials) return;
  try {
    const session = await api("POST", path, credentials);
    $("sign-in-password").value = "";
    log(path === "/auth/signup" ? `Signed up as ${session.user_id}.` : `Signed in as ${session.user_id}.`, "ok");
    await show(session.user_id);
  } catch (error) {
    showError("sign-in-error", plain(error));
  }
}

async function refreshBalance() {
  if (!user) return;
  const asked = user;
  try {
    const account = await api("GET", `/payments/accounts/${encodeURIComponent(user)}/balance`);
    if (asked !== user) return;
    $("balance").textContent = rubles(account.balance);
    $("create-account").hidden = true;
  } catch (error) {
    const none = error.type === "/problems/account-not-found";
    $("balance").textContent = none ? "no account" : "—";
    $("create-account").hidden = !none;
  }
}

// ---- orders -------------------------------------------------------------------------------

async function reloadOrders() {
  if (!user) return;
  const asked = user;
  try {
    const list = await api("GET", `/orders?user_id=${encodeURIComponent(user)}`);
    // An answer for someone who is no longer signed in here must not show.
    if (asked !== user) return;
    orders.clear();
    for (const order of list) orders.set(order.id, order);
    renderOrders();
  } catch (error) {
    log(`Could not load orders: ${plain(error)}`, "error");
  }
}

function applyOrder(order) {
  if (order.user_id !== user) return;
  const before = orders.get(order.id);
  orders.set(order.id, order);
  renderOrders();
  if (before && before.status !== order.status) {
    if (order.status === "FINISHED") {
      log(`Order ${short(order.id)} paid: ${rubles(order.amount)}.`, "ok");
    } else if (order.status === "REFUNDED") {
      log(`Order ${short(order.id)} refunded: ${rubles(order.amount)} back on the account.`, "ok");
    } else if (order.status === "CANCELLED") {
      log(`Order ${short(order.id)} cancelled: ${REASONS[order.reason] ?? order.reason}.`, "error");
    }
  }
  if (histories.has(order.id)) loadHistory(order.id);
  // A payment, a refund, or a late debit given back: the balance may have moved.
  refreshBalance();
}

async function cancelOrder(order, button) {
  if (!confirm(`Cancel order ${short(order.id)} (${rubles(order.amount)})?${order.status === "FINISHED" ? " Its money will be returned." : ""}`)) return;
  button.disabled = true;
  if (!cancelKeys.has(order.id)) cancelKeys.set(order.id, uuid());
  try {
    const now = await api("POST", `/orders/${order.id}/cancel`, undefined, { key: cancelKeys.get(order.id) });
    cancelKeys.delete(order.id);
    log(now.status === "REFUNDING" ? `Order ${short(order.id)} cancelled; returning its money…` : `Order ${short(order.id)} cancelled.`);
    applyOrder(now);
  } catch (error) {
    button.disabled = false;
    const final = error.type === "/problems/nothing-to-cancel";
    if (final) cancelKeys.delete(order.id);
    log(final ? `Order ${short(order.id)}: ${plain(error)}` : `Could not cancel: ${plain(error)}`, "error");
    reloadOrders();
  }
}

async function loadHistory(id) {
  const asked = user;
  try {
    const entries = await api("GET", `/orders/${id}/history`);
    if (asked !== user || !histories.has(id)) return;
    histories.set(id, entries);
    renderOrders();
  } catch (error) {
    log(`Could not load the history: ${plain(error)}`, "error");
  }
}

function toggleHistory(id) {
  if (histories.has(id)) {
    histories.delete(id);
    renderOrders();
  } else {
    histories.set(id, []);
    loadHistory(id);
  }
}

const short = (id) => id.slice(-8);

/** Each order's row as last drawn, with what it was drawn from. */
const rows = new Map();

/**
 * Draws the orders, newest first. A row whose order and history have not changed is the same
 * element as before and stays where it is: an update arriving while someone clicks one of its
 * buttons must not swallow the click (a replaced element never receives the mouse-up).
 */
function renderOrders() {
  const sorted = [...orders.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : a.id < b.id ? 1 : -1));
  $("orders-empty").hidden = sorted.length > 0;
  const wanted = sorted.map((order) => {
    const drawnFrom = JSON.stringify([order, histories.get(order.id) ?? null]);
    const row = rows.get(order.id);
    if (row?.drawnFrom === drawnFrom) return row.item;
    const item = orderRow(order);
    rows.set(order.id, { drawnFrom, item });
    return item;
  });
  for (const id of rows.keys()) if (!orders.has(id)) rows.delete(id);
  const list = $("orders");
  let next = list.firstChild;
  for (const item of wanted) {
    if (item === next) next = next.nextSibling;
    else list.insertBefore(item, next);
  }
  while (next) {
    const gone = next;
    next = next.nextSibling;
    gone.remove();
  }
}

function orderRow(order) {
  const item = document.createElement("li");
  item.className = "order";
  item.dataset.id = order.id;
  item.dataset.status = order.status;

  const badge = document.createElement("span");
  badge.className = `badge ${order.status.toLowerCase()}`;
  badge.textContent = BADGES[order.status] ?? order.status;

  const what = document.createElement("span");
  what.className = "what";
  what.textContent = order.description || "(no description)";

  const amount = document.createElement("span");
  amount.className = "amount";
  amount.textContent = rubles(order.amount);

  const when = document.createElement("time");
  when.dateTime = order.created_at;
  when.textContent = new Date(order.created_at).toLocaleString();

  const actions = document.createElement("span");
  actions.className = "actions";
  if (order.status === "NEW" || order.status === "FINISHED") {
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "cancel";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", () => cancelOrder(order, cancel));
    actions.append(cancel);
  }
  const history = document.createElement("button");
  history.type = "button";
  history.className = "history";
  history.textContent = histories.has(order.id) ? "Hide history" : "History";
  history.setAttribute("aria-expanded", String(histories.has(order.id)));
  history.addEventListener("click", () => toggleHistory(order.id));
  actions.append(history);

  item.append(badge, what, amount, when, actions);
  if (order.status === "CANCELLED") {
    const reason = document.createElement("span");
    reason.className = "reason";
    const back = { REQUESTED: "; its payment went through after all and is being returned", COMPLETED: "; its payment went through after all and was returned" }[order.refund] ?? "";
    reason.textContent = `Reason: ${REASONS[order.reason] ?? order.reason}${back}`;
    item.append(reason);
  }
  if (histories.has(order.id)) {
    const list = document.createElement("ol");
    list.className = "timeline";
    for (const entry of histories.get(order.id)) {
      const line = document.createElement("li");
      const at = document.createElement("time");
      at.dateTime = entry.at;
      at.textContent = new Date(entry.at).toLocaleTimeString();
      const what = document.createElement("span");
      what.className = "event";
      what.textContent = EVENTS[entry.event] ?? entry.event;
      line.append(at, " ", what);
      if (entry.detail?.reason) line.append(` — ${REASONS[entry.detail.reason] ?? entry.detail.reason}`);
      list.append(line);
    }
    item.append(list);
  }
  return item;
}

// ---- live status --------------------------------------------------------------------------

function watch() {
  events?.close();
  events = new EventSource(`/orders/events?user_id=${encodeURIComponent(user)}`);
  const live = $("live");
  events.addEventListener("open", () => {
    live.textContent = "live";
    live.classList.add("on");
    // Whatever changed while we were away is in the list we reload now.
    reloadOrders();
    refreshBalance();
  });
  events.addEventListener("order", (event) => applyOrder(JSON.parse(event.data)));
  events.addEventListener("resync", () => {
    reloadOrders();
    refreshBalance();
  });
  events.onerror = () => {
    live.textContent = "reconnecting…";
    live.classList.remove("on");
  };
}

// ---- forms --------------------------------------------------------------------------------

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn("/auth/login");
});
$("sign-up").addEventListener("click", () => signIn("/auth/signup"));

$("sign-out").addEventListener("click", async () => {
  try {
    await api("POST", "/auth/logout");
  } catch {
    // Signed out already, or unreachable: the page signs out either way.
  }
  log(`Signed out.`);
  await show(null);
});

$("create-account").addEventListener("click", async () => {
  showError("user-error", "");
  try {
    await api("POST", "/payments/accounts", {});
    log(`Account created.`, "ok");
  } catch (error) {
    showError("user-error", plain(error));
  }
  await refreshBalance();
});

$("deposit-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showError("deposit-error", "");
  const amount = parseRubles($("deposit-amount").value);
  if (amount === null) {
    showError("deposit-error", "Enter a positive amount in rubles, like 20 or 20.50.");
    return;
  }
  submitOnce(event.target, async (key) => {
    try {
      const account = await api("POST", "/payments/accounts/deposit", { amount }, { key });
      $("balance").textContent = rubles(account.balance);
      $("deposit-amount").value = "";
      log(`Deposited ${rubles(amount)}.`, "ok");
    } catch (error) {
      showError("deposit-error", plain(error));
      throw error;
    }
  }).catch(() => {});
});

$("order-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showError("order-error", "");
  const amount = parseRubles($("order-amount").value);
  if (amount === null) {
    showError("order-error", "Enter a positive amount in rubles, like 15 or 15.99.");
    return;
  }
  const description = $("order-description").value;
  submitOnce(event.target, async (key) => {
    try {
      const order = await api("POST", "/orders", { amount, description }, { key });
      if (!orders.has(order.id)) applyOrder(order);
      log(`Order ${short(order.id)} placed: ${rubles(amount)}; paying…`);
      $("order-amount").value = "";
    } catch (error) {
      showError("order-error", plain(error));
      throw error;
    }
  }).catch(() => {});
});

// A new amount is a new write: a key kept for a failed one must not carry over to it.
for (const [form, field] of [["deposit-form", "deposit-amount"], ["order-form", "order-amount"], ["order-form", "order-description"]]) {
  $(field).addEventListener("input", () => delete $(form).dataset.key);
}

show(localStorage.getItem(SIGNED_IN));
