// One official socket.io-client v4, driven by a test over stdin/stdout (JSON lines).
//
//   node client.mjs '{"url": "http://127.0.0.1:PORT/messages", "auth": {...}, "query": {...},
//                     "transports": [...], "autoAck": true, "reconnection": false,
//                     "timeout": 30000}'
//
// Prints, one JSON object a line, each with "n", its place in the order of arrival, and
// "t", when it happened (the client's clock, ms since the epoch):
//   {"type": "connect", "id": ..., "transport": ...}  connected to the namespace (again,
//                                                  after a reconnection)
//   {"type": "upgrade", "transport": ...}          engine.io upgraded its transport
//   {"type": "connect_error", "message": ..., "data": ...}
//   {"type": "event", "seq": n, "event": ..., "args": [...], "wantsAck": bool}
//   {"type": "reply", "ref": r, "args": [...]}    the server's ack of an emit
//   {"type": "reply", "ref": r, "error": ...}     no ack came in time
//   {"type": "disconnect", "reason": ...}
//   {"type": "timeout"}                            the whole run took too long
// Reads, one JSON object a line:
//   {"op": "emit", "ref": r, "event": ..., "args": [...], "ack": bool}
//   {"op": "ack", "seq": n, "args": [...]}         call the ack callback of event n
//   {"op": "disconnect"}
// It exits when stdin ends, and by itself after `timeout` ms, so it never outlives a test.

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const config = JSON.parse(process.argv[2]);
let arrival = 0;
const print = (message) =>
  process.stdout.write(JSON.stringify({ ...message, n: ++arrival, t: Date.now() }) + "\n");

const socket = io(config.url, {
  auth: config.auth ?? {},
  query: config.query ?? {},
  transports: config.transports ?? ["polling", "websocket"],
  reconnection: config.reconnection ?? false,
  reconnectionDelay: 100,
  reconnectionDelayMax: config.reconnectionDelayMax ?? 500,
  forceNew: true,
  timeout: 5000,
});
socket.io.on("open", () =>
  socket.io.engine.on("upgrade", (transport) =>
    print({ type: "upgrade", transport: transport.name }),
  ),
);

const pendingAcks = new Map();
let seq = 0;

socket.on("connect", () =>
  print({ type: "connect", id: socket.id, transport: socket.io.engine.transport.name }),
);
socket.on("connect_error", (err) =>
  print({ type: "connect_error", message: err.message, data: err.data ?? null }),
);
socket.on("disconnect", (reason) => print({ type: "disconnect", reason }));
socket.onAny((event, ...args) => {
  const last = args[args.length - 1];
  const wantsAck = typeof last === "function";
  if (wantsAck) args.pop();
  const n = ++seq;
  print({ type: "event", seq: n, event, args, wantsAck });
  if (!wantsAck) return;
  if (config.autoAck) last();
  else pendingAcks.set(n, last);
});

function run(command) {
  switch (command.op) {
    case "emit":
      if (command.ack) {
        socket.timeout(5000).emit(command.event, ...command.args, (err, ...args) => {
          print(err ? { type: "reply", ref: command.ref, error: String(err.message ?? err) }
                    : { type: "reply", ref: command.ref, args });
        });
      } else {
        socket.emit(command.event, ...command.args);
      }
      break;
    case "ack": {
      const ack = pendingAcks.get(command.seq);
      pendingAcks.delete(command.seq);
      if (ack) ack(...(command.args ?? []));
      break;
    }
    case "disconnect":
      socket.disconnect();
      break;
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (line.trim()) run(JSON.parse(line));
});

const timer = setTimeout(() => {
  print({ type: "timeout" });
  process.exit(1);
}, config.timeout ?? 30000);

lines.on("close", () => {
  clearTimeout(timer);
  socket.disconnect();
  socket.io.engine?.close();
});
