// chatrelay demo client: plain JavaScript and the browser's native WebSocket API.
// It speaks chatrelay's WebSocket binding: {"event", "data", "id"?} JSON text frames.
"use strict";

const params = new URLSearchParams(location.search);
const me = params.get("user") || "alice";
const state = {
  users: {},            // id -> {id, name}
  conversations: [],    // [{id, participantIds, name}]
  messages: {},         // conversationId -> [message]
  unread: {},           // conversationId -> count
  online: new Set(),
  lastSeen: {},         // userId -> ISO timestamp
  typing: {},           // conversationId -> Set(userId)
  positions: {},        // conversationId -> {offset, epoch} of the last room event seen
  active: null,
};
const $ = (id) => document.getElementById(id);

// --- REST --------------------------------------------------------------------------

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body ? {"Content-Type": "application/json"} : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json();
  if (!response.ok) throw new Error(`${data.code}: ${data.message}`);
  return data;
}

// --- the WebSocket binding -----------------------------------------------------------

let socket = null;
let nextId = 1;
const pending = new Map();  // request id -> resolve
let reconnectDelay = 500;
let connectedBefore = false;

// Browsers cannot set headers on a WebSocket; a token goes in the first frame rather
// than the URL, which servers and proxies write to their access logs.
// The binding's subprotocol is optional; offering it is what a versioned client does.
const SUBPROTOCOLS = ["chatrelay.v1"];

async function openSocket() {
  const config = await api("GET", "/api/config");
  const base = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  if (config.auth !== "jwt") {
    return {ws: new WebSocket(`${base}?userId=${encodeURIComponent(me)}`, SUBPROTOCOLS)};
  }
  const {token} = await api("POST", "/api/login", {userId: me});
  return {ws: new WebSocket(base, SUBPROTOCOLS), token};
}

function request(event, data) {
  return new Promise((resolve) => {
    const id = nextId++;
    pending.set(id, resolve);
    socket.send(JSON.stringify({event, data, id}));
  });
}

function send(event, data) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({event, data}));
}

async function connect() {
  const {ws, token} = await openSocket();
  socket = ws;
  socket.onopen = async () => {
    reconnectDelay = 500;
    if (token) socket.send(JSON.stringify({event: "auth", data: {token}}));
    $("connection").textContent = "connected";
    const reconnected = connectedBefore;
    connectedBefore = true;
    for (const {id} of state.conversations) {
      // With the last position seen, the server replays what was missed (as ordinary
      // events, before this ack: `recovered: true`), or nothing (`recovered: false`).
      const position = state.positions[id];
      const ack = await request("conversation:join", {conversationId: id, position});
      if (!ack.ok) continue;
      state.typing[id] = new Set(ack.typing.filter((u) => u !== me));
      if (ack.position) state.positions[id] = ack.position;
      if (reconnected && ack.recovered !== true) await reloadMessages(id);
    }
    await loadPresence();
    render();
  };
  socket.onmessage = (frame) => {
    const {event, data, id} = JSON.parse(frame.data);
    if (event === "ack") {
      const resolve = pending.get(id);
      pending.delete(id);
      if (resolve) resolve(data);
      return;
    }
    if (id !== undefined) socket.send(JSON.stringify({event: "ack", id, data: {}}));
    if (data && data.position) state.positions[data.conversationId] = data.position;
    const handler = handlers[event];
    if (handler) handler(data);
  };
  socket.onclose = () => {
    for (const resolve of pending.values()) resolve({ok: false});
    pending.clear();
    reconnectLater();
  };
}

// Also when connect() itself fails (the REST calls before the socket, while offline).
function reconnectLater() {
  $("connection").textContent = "reconnecting…";
  setTimeout(() => connect().catch(reconnectLater), reconnectDelay);
  reconnectDelay = Math.min(reconnectDelay * 2, 10000);
}

// --- server events -------------------------------------------------------------------

const handlers = {
  // The credentials expire soon: get a new token and hand it over in band.
  "auth:expiring": async () => {
    const {token} = await api("POST", "/api/login", {userId: me});
    await request("auth:refresh", {token});
  },
  // This server is going away: its close follows, and the page reconnects then.
  "server:draining": () => {
    $("connection").textContent = "server restarting…";
  },
  "message:received": ({conversationId, message}) => {
    const list = state.messages[conversationId] || (state.messages[conversationId] = []);
    if (!list.some((m) => m.id === message.id)) list.push(message);
    if (state.typing[conversationId]) state.typing[conversationId].delete(message.senderId);
    if (message.senderId !== me) {
      if (conversationId === state.active && document.visibilityState === "visible") {
        markRead(conversationId);
      } else {
        state.unread[conversationId] = (state.unread[conversationId] || 0) + 1;
      }
    }
    render();
  },
  "message:status": ({conversationId, messageId, status}) => {
    const message = (state.messages[conversationId] || []).find((m) => m.id === messageId);
    const order = ["sent", "delivered", "read"];
    if (message && order.indexOf(status) > order.indexOf(message.status)) message.status = status;
    render();
  },
  "typing:start": ({conversationId, userId}) => {
    (state.typing[conversationId] || (state.typing[conversationId] = new Set())).add(userId);
    render();
  },
  "typing:stop": ({conversationId, userId}) => {
    if (state.typing[conversationId]) state.typing[conversationId].delete(userId);
    render();
  },
  "user:online": ({userId}) => { state.online.add(userId); render(); },
  "user:offline": ({userId, lastSeen}) => {
    state.online.delete(userId);
    state.lastSeen[userId] = lastSeen;
    render();
  },
  // Events of the conversation were lost between servers: fetch it again.
  "sync:required": ({conversationId}) => reloadMessages(conversationId),
  "error": (error) => console.warn("chatrelay error", error),
};

// --- actions -------------------------------------------------------------------------

async function loadPresence() {
  const {userIds} = await api("GET", "/api/users/online");
  state.online = new Set(userIds);
}

// The conversation's messages and their statuses, from the application's REST API.
async function loadMessages(conversationId) {
  state.messages[conversationId] = await api("GET", `/api/conversations/${conversationId}/messages`);
}

// After events were missed and not replayed: load again, count and mark what is new.
async function reloadMessages(conversationId) {
  const known = new Set((state.messages[conversationId] || []).map((m) => m.id));
  await loadMessages(conversationId);
  const unseen = state.messages[conversationId]
    .filter((m) => !known.has(m.id) && m.senderId !== me && m.status !== "read");
  if (conversationId === state.active && document.visibilityState === "visible") {
    await markRead(conversationId);
  } else {
    state.unread[conversationId] = (state.unread[conversationId] || 0) + unseen.length;
  }
  render();
}

async function openConversation(conversationId) {
  state.active = conversationId;
  state.unread[conversationId] = 0;
  await loadMessages(conversationId);
  $("composer").disabled = false;
  $("send").disabled = false;
  render();
  await markRead(conversationId);
  $("composer").focus();
}

async function markRead(conversationId) {
  await api("POST", `/api/conversations/${conversationId}/read`, {userId: me});
}

let typingSince = 0;
function onInput() {
  if (!state.active) return;
  const now = Date.now();
  if ($("composer").value.trim() === "") {
    stopTyping();
  } else if (now - typingSince > 2000) {  // refresh at most every 2 s: the server debounces
    typingSince = now;
    send("typing:start", {conversationId: state.active});
  }
}

function stopTyping() {
  if (typingSince && state.active) send("typing:stop", {conversationId: state.active});
  typingSince = 0;
}

async function onSubmit(event) {
  event.preventDefault();
  const text = $("composer").value.trim();
  if (!text || !state.active) return;
  $("composer").value = "";
  stopTyping();
  await api("POST", `/api/conversations/${state.active}/messages`,
            {senderId: me, type: "text", content: {text}});
}

// --- rendering -----------------------------------------------------------------------

function nameOf(userId) { return (state.users[userId] || {name: userId}).name; }

function titleOf(conversation) {
  if (conversation.name) return conversation.name;
  return conversation.participantIds.filter((u) => u !== me).map(nameOf).join(", ");
}

function peersOf(conversation) { return conversation.participantIds.filter((u) => u !== me); }

function time(iso) {
  return new Date(iso).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function render() {
  $("me-name").textContent = nameOf(me);
  $("me-avatar").textContent = nameOf(me)[0];
  const list = $("conversations");
  list.replaceChildren(...state.conversations.map((c) => {
    const last = (state.messages[c.id] || []).at(-1);
    const online = peersOf(c).some((u) => state.online.has(u));
    const unread = state.unread[c.id] || 0;
    return el("li", {class: c.id === state.active ? "active" : "", "data-testid": "conversation",
                     "data-id": c.id, onclick: () => openConversation(c.id)},
      el("span", {class: "avatar"}, titleOf(c)[0]),
      el("div", {},
        el("div", {class: "title"}, titleOf(c), " ", el("span", {class: online ? "dot online" : "dot"})),
        el("div", {class: "preview"}, last ? last.content.text : "")),
      unread ? el("span", {class: "badge"}, String(unread)) : "");
  }));

  const conversation = state.conversations.find((c) => c.id === state.active);
  if (!conversation) return;
  $("peer-name").textContent = titleOf(conversation);
  $("peer-avatar").textContent = titleOf(conversation)[0];
  const peers = peersOf(conversation);
  const onlinePeers = peers.filter((u) => state.online.has(u));
  let presence;
  if (peers.length === 1) {
    const peer = peers[0];
    presence = state.online.has(peer) ? "online"
      : state.lastSeen[peer] ? `last seen ${time(state.lastSeen[peer])}` : "offline";
  } else {
    presence = `${onlinePeers.length} of ${peers.length} online`;
  }
  $("presence").textContent = presence;
  const typing = [...(state.typing[conversation.id] || [])].filter((u) => u !== me);
  $("typing").hidden = typing.length === 0;
  $("typing").textContent = typing.length ? ` · ${typing.map(nameOf).join(", ")} typing…` : "";

  const messages = $("messages");
  messages.replaceChildren(...(state.messages[conversation.id] || []).map((m) => {
    const mine = m.senderId === me;
    const ticks = m.status === "sent" ? "✓" : "✓✓";
    return el("li", {class: mine ? "message mine" : "message", "data-testid": "message",
                     "data-id": m.id, "data-status": m.status},
      !mine && peers.length > 1 ? el("div", {class: "sender"}, nameOf(m.senderId)) : "",
      el("div", {class: "text"}, m.content.text),
      el("div", {class: "meta"}, time(m.createdAt),
        mine ? el("span", {class: m.status === "read" ? "ticks read" : "ticks",
                           title: m.status}, ticks) : ""));
  }));
  messages.scrollTop = messages.scrollHeight;
}

// --- start ---------------------------------------------------------------------------

async function main() {
  for (const user of await api("GET", "/api/users")) state.users[user.id] = user;
  state.conversations = await api("GET", `/api/conversations?userId=${encodeURIComponent(me)}`);
  $("composer").addEventListener("input", onInput);
  $("composer").addEventListener("blur", stopTyping);
  $("composer-form").addEventListener("submit", onSubmit);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.active) markRead(state.active);
  });
  render();
  await connect();
  if (state.conversations.length) await openConversation(state.conversations[0].id);
}

main().catch((error) => { $("connection").textContent = `error: ${error.message}`; });
