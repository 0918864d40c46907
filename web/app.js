// GoZon web UI: everything it shows comes from the API behind the gateway.
// Live status: an EventSource on /orders/events; on every (re)connect the list is reloaded, so
// nothing missed while disconnected stays stale.

const $ = (id) => document.getElementById(id);
const USER_ID = /^[A-Za-z0-9._-]{1,64}$/;
const REASONS = {
  insufficient_funds: "not enough money on the account",
  account_not_found: "there is no account for this user",
};

let user = null;
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
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(method, path, body, { idempotent = false } = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (idempotent) headers["idempotency-key"] = crypto.randomUUID();
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "the server cannot be reached");
  }
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, payload?.detail ?? `request failed (${response.status})`);
  }
  return payload;
}

/** Turns an API problem into plain words for the person. */
function plain(error) {
  if (error.status === 0) return "Cannot reach GoZon. Is it running?";
  if (error.status === 404 && /no account/.test(error.message)) return "There is no account for this user yet. Create it first.";
  if (error.status === 409) return "This account already exists.";
  if (/overflow/.test(error.message)) return "That deposit would make the balance too large.";
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

// ---- user, balance ------------------------------------------------------------------------

function rememberUser(id) {
  const recent = JSON.parse(localStorage.getItem("gozon.users") ?? "[]").filter((u) => u !== id);
  recent.unshift(id);
  localStorage.setItem("gozon.users", JSON.stringify(recent.slice(0, 8)));
  renderRecent();
}

function renderRecent() {
  const list = $("recent-users");
  list.replaceChildren(
    ...JSON.parse(localStorage.getItem("gozon.users") ?? "[]").map((id) => {
      const option = document.createElement("option");
      option.value = id;
      return option;
    }),
  );
}

function readUser() {
  const id = $("user-id").value.trim();
  if (!USER_ID.test(id)) {
    showError("user-error", "Enter 1–64 characters: letters, digits, dot, underscore or dash.");
    $("user-id").setAttribute("aria-invalid", "true");
    return null;
  }
  $("user-id").removeAttribute("aria-invalid");
  showError("user-error", "");
  return id;
}

async function useUser(id) {
  if (user === id) return;
  user = id;
  rememberUser(id);
  orders.clear();
  renderOrders();
  watch();
  await Promise.all([refreshBalance(), reloadOrders()]);
}

async function refreshBalance() {
  if (!user) return;
  try {
    const account = await api("GET", `/payments/accounts/${encodeURIComponent(user)}/balance`);
    $("balance").textContent = rubles(account.balance);
  } catch (error) {
    $("balance").textContent = error.status === 404 ? "no account" : "—";
  }
}

// ---- orders -------------------------------------------------------------------------------

async function reloadOrders() {
  if (!user) return;
  try {
    const list = await api("GET", `/orders?user_id=${encodeURIComponent(user)}`);
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
  if (before?.status === "NEW" && order.status !== "NEW") {
    if (order.status === "FINISHED") {
      log(`Order ${short(order.id)} paid: ${rubles(order.amount)}.`, "ok");
      refreshBalance();
    } else {
      log(`Order ${short(order.id)} cancelled: ${REASONS[order.reason] ?? order.reason}.`, "error");
    }
  }
}

const short = (id) => id.slice(-8);

function renderOrders() {
  const sorted = [...orders.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : a.id < b.id ? 1 : -1));
  $("orders-empty").hidden = sorted.length > 0;
  $("orders").replaceChildren(
    ...sorted.map((order) => {
      const item = document.createElement("li");
      item.className = "order";
      item.dataset.id = order.id;
      item.dataset.status = order.status;

      const badge = document.createElement("span");
      badge.className = `badge ${order.status.toLowerCase()}`;
      badge.textContent = { NEW: "Paying…", FINISHED: "Paid", CANCELLED: "Cancelled" }[order.status] ?? order.status;

      const what = document.createElement("span");
      what.className = "what";
      what.textContent = order.description || "(no description)";

      const amount = document.createElement("span");
      amount.className = "amount";
      amount.textContent = rubles(order.amount);

      const when = document.createElement("time");
      when.dateTime = order.created_at;
      when.textContent = new Date(order.created_at).toLocaleString();

      item.append(badge, what, amount, when);
      if (order.status === "CANCELLED") {
        const reason = document.createElement("span");
        reason.className = "reason";
        reason.textContent = `Reason: ${REASONS[order.reason] ?? order.reason}`;
        item.append(reason);
      }
      return item;
    }),
  );
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

$("user-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = readUser();
  if (id) await useUser(id);
});

$("create-account").addEventListener("click", async () => {
  const id = readUser();
  if (!id) return;
  try {
    await api("POST", "/payments/accounts", { user_id: id });
    log(`Account ${id} created.`, "ok");
  } catch (error) {
    showError("user-error", plain(error));
    if (error.status !== 409) return;
  }
  user = null;
  await useUser(id);
});

$("deposit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("deposit-error", "");
  if (!user && !(await pickTypedUser())) return;
  const amount = parseRubles($("deposit-amount").value);
  if (amount === null) {
    showError("deposit-error", "Enter a positive amount in rubles, like 20 or 20.50.");
    return;
  }
  try {
    const account = await api("POST", "/payments/accounts/deposit", { user_id: user, amount }, { idempotent: true });
    $("balance").textContent = rubles(account.balance);
    $("deposit-amount").value = "";
    log(`Deposited ${rubles(amount)}.`, "ok");
  } catch (error) {
    showError("deposit-error", plain(error));
  }
});

$("order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("order-error", "");
  if (!user && !(await pickTypedUser())) return;
  const amount = parseRubles($("order-amount").value);
  if (amount === null) {
    showError("order-error", "Enter a positive amount in rubles, like 15 or 15.99.");
    return;
  }
  const description = $("order-description").value;
  try {
    const order = await api("POST", "/orders", { user_id: user, amount, description }, { idempotent: true });
    if (!orders.has(order.id)) applyOrder(order);
    log(`Order ${short(order.id)} placed: ${rubles(amount)}; paying…`);
    $("order-amount").value = "";
  } catch (error) {
    showError("order-error", plain(error));
  }
});

async function pickTypedUser() {
  const id = readUser();
  if (!id) return false;
  await useUser(id);
  return true;
}

renderRecent();
const last = JSON.parse(localStorage.getItem("gozon.users") ?? "[]")[0];
if (last) $("user-id").value = last;
