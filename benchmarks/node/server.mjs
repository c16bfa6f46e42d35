// Node's socket.io server: the peer a NestJS team would keep, measured on the same
// workload as chatrelay (see ../README.md). It speaks the part of chatrelay's protocol
// the benchmarks use: `conversation:join` (acknowledged) and server-side
// `message:status` emits to a room, driven by the same loop as the Python servers.
//
//   node server.mjs '{"compression": false}'
//
// Prints JSON lines: {"type": "ready", "port": P, "feedbackPort": F}, then one
// {"type": "done", ...} per command. Reads JSON lines on stdin:
//   {"op": "fanout", "rooms": R, "count": N, "rate": r|null, "window": W, "timeout": s}
// and exits when stdin ends.

import dgram from "node:dgram";
import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { Server } from "socket.io";

const config = JSON.parse(process.argv[2] ?? "{}");
const print = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const PADDING = "x".repeat(config.padding ?? 64);

const http = createServer();
const io = new Server(http, {
  // Per-message compression is set explicitly, as on every server measured. With it
  // on, every message is compressed (engine.io's default threshold skips < 1 KiB).
  perMessageDeflate: config.compression ? { threshold: 0 } : false,
  httpCompression: false,
  cors: { origin: "*" },
});
const chat = io.of("/messages");
chat.on("connection", (socket) => {
  socket.on("conversation:join", (data, ack) => {
    const conversationId = String(data?.conversationId);
    socket.join(conversationId);
    if (typeof ack === "function") ack({ ok: true, conversationId });
  });
});

// The load generator reports, over UDP, the last broadcast that reached all of its
// recipients; the loop keeps at most `window` broadcasts in flight.
const feedback = dgram.createSocket("udp4");
let delivered = -1;
let wake = null;
feedback.on("message", (msg) => {
  const seq = Number(msg.toString());
  if (seq > delivered) delivered = seq;
  if (wake) {
    wake();
    wake = null;
  }
});

function waitFeedback(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}

async function fanout({ rooms, count, rate, window, timeout }) {
  delivered = -1;
  const started = now();
  const deadline = started + timeout * 1000;
  let error = null;
  let i = 0;
  for (; i < count; i++) {
    while (i - delivered > window && now() < deadline) {
      await waitFeedback(deadline - now());
    }
    if (now() >= deadline) {
      error = `stalled after ${i} broadcasts`;
      break;
    }
    let ts = now();
    if (rate) {
      const due = started + (i * 1000) / rate;
      if (due > ts) await sleep(due - ts);
      // Late broadcasts carry their scheduled time: the delay counts (no coordinated
      // omission).
      ts = Math.min(now(), due);
    } else {
      // Let the sockets write between broadcasts, as the Python loops do.
      await new Promise((resolve) => setImmediate(resolve));
    }
    const room = `c${i % rooms}`;
    chat.to(room).emit("message:status", {
      conversationId: room,
      messageId: `${i}:${ts.toFixed(3)}:${PADDING}`,
      status: "delivered",
      userId: "bench",
      updatedAt: new Date(ts).toISOString(),
    });
  }
  print({ type: "done", emitted: i, seconds: (now() - started) / 1000, error });
}

const commands = createInterface({ input: process.stdin });
let queue = Promise.resolve();
commands.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  if (command.op === "fanout") queue = queue.then(() => fanout(command));
});
commands.on("close", () => process.exit(0));

feedback.bind(0, "127.0.0.1", () => {
  http.listen(0, "127.0.0.1", 4096, () => {
    print({ type: "ready", port: http.address().port, feedbackPort: feedback.address().port });
  });
});
