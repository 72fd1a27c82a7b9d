// The console's sign-in page: sign in with a passkey or an API key, add and remove passkeys,
// sign out. Every text from the server is set with textContent, never as markup.

const $ = (id) => document.getElementById(id);
let csrf = "";

function say(text) {
  $("status").textContent = text;
}

async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw new Error(data?.error?.message || `request failed (${res.status})`);
  }
  return data;
}

const toBytes = (b64url) => {
  const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "===".slice((b64.length + 3) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
};
const toB64url = (buf) =>
  btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

function creationOptions(json) {
  const o = structuredClone(json.publicKey);
  o.challenge = toBytes(o.challenge);
  o.user.id = toBytes(o.user.id);
  for (const c of o.excludeCredentials || []) c.id = toBytes(c.id);
  return { publicKey: o };
}

function requestOptions(json) {
  const o = structuredClone(json.publicKey);
  o.challenge = toBytes(o.challenge);
  for (const c of o.allowCredentials || []) c.id = toBytes(c.id);
  return { publicKey: o };
}

function credentialJson(cred) {
  const r = cred.response;
  const response = { clientDataJSON: toB64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = toB64url(r.attestationObject);
    response.transports = r.getTransports ? r.getTransports() : [];
  } else {
    response.authenticatorData = toB64url(r.authenticatorData);
    response.signature = toB64url(r.signature);
    if (r.userHandle) response.userHandle = toB64url(r.userHandle);
  }
  return {
    id: cred.id,
    rawId: toB64url(cred.rawId),
    type: cred.type,
    response,
    clientExtensionResults: cred.getClientExtensionResults(),
  };
}

async function showPasskeys() {
  const list = $("passkeys");
  const { passkeys } = await call("GET", "/console/api/passkeys");
  list.replaceChildren();
  for (const p of passkeys) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = p.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove passkey ${p.name}`);
    remove.addEventListener("click", async () => {
      try {
        await call("DELETE", `/console/api/passkeys/${encodeURIComponent(p.id)}`);
        say(`Passkey "${p.name}" removed.`);
        await refresh();
      } catch (e) {
        say(e.message);
      }
    });
    li.append(name, remove);
    list.append(li);
  }
  if (!passkeys.length) {
    const li = document.createElement("li");
    li.textContent = "No passkey yet.";
    list.append(li);
  }
}

async function refresh() {
  try {
    const session = await call("GET", "/console/api/session");
    csrf = session.csrf_token;
    $("who").textContent = session.account;
    $("signed-out").hidden = true;
    $("signed-in").hidden = false;
    await showPasskeys();
  } catch {
    csrf = "";
    $("signed-in").hidden = true;
    $("signed-out").hidden = false;
  }
}

$("key-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await call("POST", "/console/api/session/key", { key: $("key").value });
    $("key").value = "";
    say("Signed in.");
    await refresh();
  } catch (e) {
    say(e.message);
  }
});

$("passkey-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const start = await call("POST", "/console/api/session/passkey/options", {
      account: $("account").value,
    });
    const cred = await navigator.credentials.get(requestOptions(start.options));
    await call("POST", "/console/api/session/passkey", {
      ceremony: start.ceremony,
      credential: credentialJson(cred),
    });
    say("Signed in with a passkey.");
    await refresh();
  } catch (e) {
    say(e.message);
  }
});

$("register-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const start = await call("POST", "/console/api/passkeys/options", {
      name: $("passkey-name").value,
    });
    const cred = await navigator.credentials.create(creationOptions(start.options));
    await call("POST", "/console/api/passkeys", {
      ceremony: start.ceremony,
      credential: credentialJson(cred),
    });
    $("passkey-name").value = "";
    say("Passkey added.");
    await refresh();
  } catch (e) {
    say(e.message);
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    await call("DELETE", "/console/api/session");
  } catch (e) {
    say(e.message);
  }
  say("Signed out.");
  await refresh();
});

refresh();
