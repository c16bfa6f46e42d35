// The load generator: many clients in one Node process, driven by the harness over
// stdin/stdout (JSON lines). Socket.IO clients are the official socket.io-client;
// WebSocket clients are `ws`, speaking chatrelay's JSON frames.
//
//   node load.mjs
//
// Reads, one JSON object a line:
//   {"op": "connect", "kind": "socketio"|"websocket", "url": ..., "clients": n,
//    "rooms": r, "compression": bool, "concurrency": c, "timeout": s, "group": g}
//       opens n more clients; client i joins conversation `c${i % r}` (acknowledged).
//       Latency is reported for all clients, and for those of group 1 apart (the
//       clients of the second server, in the two-server scenario).
//   {"op": "expect", "count": N, "rooms": r, "perRoom": m, "feedbackPort": F,
//    "step": k, "timeout": s}
//       counts `message:status` events: broadcast i goes to room i % r and is done when
//       its m recipients have it; the last broadcast done in order is sent to the
//       server over UDP (every k broadcasts), so it can bound what is in flight.
//   {"op": "close"}
// Prints one JSON object a line per command: {"type": "connected", ...},
// {"type": "delivered", ...}, {"type": "closed"}. Exits when stdin ends.

import dgram from "node:dgram";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";
import WebSocket from "ws";

const print = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const now = () => performance.timeOrigin + performance.now();

let clients = [];
let tracker = null;
let disconnects = 0;

// --- receiving -------------------------------------------------------------------

// `messageId` is "<seq>:<send time in ms>:<padding>" (see the servers' loops).
function received(messageId, group) {
  const t = tracker;
  if (t === null) return;
  const at = now();
  const first = messageId.indexOf(":");
  const seq = Number(messageId.slice(0, first));
  const ts = Number(messageId.slice(first + 1, messageId.indexOf(":", first + 1)));
  if (!(seq >= 0 && seq < t.count)) return;
  const latency = t.latency[group];
  if (t.samples[group] < latency.length) latency[t.samples[group]++] = at - ts;
  t.deliveries++;
  if (++t.counts[seq] !== t.perRoom) return;
  // Broadcasts complete mostly in order; advance over every one that is done.
  let next = t.done + 1;
  while (next < t.count && t.counts[next] >= t.perRoom) next++;
  if (next - 1 === t.done) return;
  t.done = next - 1;
  if (t.done - t.sent >= t.step || t.done === t.count - 1) {
    t.sent = t.done;
    t.udp.send(String(t.done), t.feedbackPort, "127.0.0.1");
  }
  if (t.done === t.count - 1) finish("ok");
}

const STATUS_MARK = '"messageId":"';

function onFrame(data, group) {
  // chatrelay's frames and the bare server's are {"event": …, "data": {…}}: find the
  // id without parsing the whole frame, so the client stays cheap.
  const text = data.toString();
  if (!text.startsWith('{"event":"message:status"')) return;
  const at = text.indexOf(STATUS_MARK);
  if (at < 0) return;
  const start = at + STATUS_MARK.length;
  received(text.slice(start, text.indexOf('"', start)), group);
}

// --- connecting ------------------------------------------------------------------

function connectSocketIO(config, userId, room) {
  return new Promise((resolve) => {
    const socket = io(`${config.url}/messages`, {
      transports: ["websocket"],
      query: { userId },
      forceNew: true,
      reconnection: false,
      timeout: config.timeout * 1000,
      perMessageDeflate: config.compression ? { threshold: 0 } : false,
    });
    socket.on("message:status", (data) => received(data.messageId, config.group ?? 0));
    socket.on("disconnect", () => disconnects++);
    socket.on("connect_error", (err) => resolve({ socket, error: String(err.message ?? err) }));
    socket.on("connect", () => {
      socket
        .timeout(config.timeout * 1000)
        .emit("conversation:join", { conversationId: room }, (err, reply) =>
          resolve({ socket, error: err ? String(err.message ?? err) : reply?.ok ? null : "refused" }),
        );
    });
  });
}

function connectWebSocket(config, userId, room) {
  return new Promise((resolve) => {
    const url = `${config.url.replace(/^http/, "ws")}/ws?userId=${encodeURIComponent(userId)}`;
    const socket = new WebSocket(url, {
      perMessageDeflate: config.compression ? { threshold: 0 } : false,
      handshakeTimeout: config.timeout * 1000,
    });
    const timer = setTimeout(() => resolve({ socket, error: "join timed out" }), config.timeout * 1000);
    const settle = (error) => {
      clearTimeout(timer);
      resolve({ socket, error });
    };
    socket.on("error", (err) => settle(String(err.message ?? err)));
    socket.on("close", () => disconnects++);
    socket.on("open", () => {
      socket.send(JSON.stringify({ event: "conversation:join", data: { conversationId: room }, id: 1 }));
    });
    let joined = false;
    socket.on("message", (data) => {
      if (joined) return onFrame(data, config.group ?? 0);
      const frame = JSON.parse(data.toString());
      if (frame.event === "ack" && frame.id === 1) {
        joined = true;
        settle(frame.data?.ok ? null : "refused");
      }
    });
  });
}

async function connect(config) {
  const started = now();
  const open = config.kind === "socketio" ? connectSocketIO : connectWebSocket;
  const errors = [];
  let next = clients.length;
  const end = clients.length + config.clients;
  async function worker() {
    while (next < end) {
      const i = next++;
      const { socket, error } = await open(config, `u${i}`, `c${i % config.rooms}`);
      clients.push(socket);
      if (error) errors.push(error);
    }
  }
  await Promise.all(Array.from({ length: Math.min(config.concurrency, config.clients) }, worker));
  print({
    type: "connected",
    clients: config.clients,
    failed: errors.length,
    errors: [...new Set(errors)].slice(0, 5),
    seconds: (now() - started) / 1000,
  });
}

// --- expecting deliveries --------------------------------------------------------

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function finish(outcome) {
  const t = tracker;
  if (t === null) return;
  tracker = null;
  clearTimeout(t.timer);
  const all = new Float64Array(t.samples[0] + t.samples[1]);
  all.set(t.latency[0].subarray(0, t.samples[0]));
  all.set(t.latency[1].subarray(0, t.samples[1]), t.samples[0]);
  const summary = (sorted) => ({
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    max: sorted.length ? sorted[sorted.length - 1] : null,
  });
  print({
    type: "delivered",
    outcome,
    broadcasts: t.done + 1,
    deliveries: t.deliveries,
    expected: t.count * t.perRoom,
    seconds: (now() - t.started) / 1000,
    disconnects,
    latency: summary(all.sort()),
    remote: t.samples[1] ? summary(t.latency[1].subarray(0, t.samples[1]).sort()) : null,
  });
  t.udp.close();
}

function expect(config) {
  const udp = dgram.createSocket("udp4");
  tracker = {
    count: config.count,
    perRoom: config.perRoom,
    counts: new Int32Array(config.count),
    latency: [0, 1].map(() => new Float64Array(Math.min(config.count * config.perRoom, 2_000_000))),
    samples: [0, 0],
    deliveries: 0,
    done: -1,
    sent: -1,
    step: Math.max(1, config.step),
    feedbackPort: config.feedbackPort,
    udp,
    started: now(),
    timer: setTimeout(() => finish("timeout"), config.timeout * 1000),
  };
  print({ type: "expecting" });
}

// --- commands --------------------------------------------------------------------

async function close() {
  const closing = clients.map(
    (socket) =>
      new Promise((resolve) => {
        if (socket instanceof WebSocket) {
          if (socket.readyState === WebSocket.CLOSED) return resolve();
          socket.once("close", resolve);
          socket.terminate();
        } else {
          socket.disconnect();
          resolve();
        }
      }),
  );
  await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 5000))]);
  clients = [];
  disconnects = 0;
  print({ type: "closed" });
}

const commands = createInterface({ input: process.stdin });
let queue = Promise.resolve();
commands.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  const run = { connect, expect, close }[command.op];
  if (!run) throw new Error(`unknown op ${command.op}`);
  queue = queue.then(() => run(command));
});
commands.on("close", () => process.exit(0));
