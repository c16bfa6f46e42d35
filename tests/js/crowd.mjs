// Many official socket.io-client v4 tabs in one Node process, each of which resumes its
// conversation after a reconnect, as a chat page does. Driven by a test over
// stdin/stdout (JSON lines):
//
//   node crowd.mjs '{"url": "http://127.0.0.1:PORT/messages", "users": ["alice", ...],
//                    "conversationId": "c2", "transports": [...], "timeout": 60000}'
//
// One tab per entry of "users" (its userId), with the client's own reconnection on
// (delays of 100 to 500 ms). On each connect a tab joins the conversation, with the
// position of the last room event it received once it has one; it acks every event that
// asks. Reads, one JSON object a line:
//   {"op": "status"}   prints {"type": "status", "connected": n, "connects": total}
//   {"op": "report"}   prints {"type": "report", "tabs": [...]}, one entry a tab:
//                      {user, connects, log: [...], offsets: [...], epochs: [...],
//                       joins: [{recovered, position, ok, error}], connectErrors}
//                      where log lists "draining", "error:<code>", "disconnect:<reason>",
//                      "sync:<n>" (sync:required after n positions) and "connect" in
//                      the order they happened.
// It exits when stdin ends, and by itself after `timeout` ms, so it never outlives a test.

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const config = JSON.parse(process.argv[2]);
const print = (message) => process.stdout.write(JSON.stringify(message) + "\n");

const tabs = config.users.map((user) => {
  const tab = {
    user,
    connects: 0,
    connected: false,
    log: [],
    offsets: [],
    epochs: [],
    joins: [],
    connectErrors: 0,
    last: null,
  };
  const socket = io(config.url, {
    query: { userId: user },
    transports: config.transports ?? ["polling", "websocket"],
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    forceNew: true,
    timeout: 5000,
  });
  tab.socket = socket;
  const record = (data) => {
    if (data && data.conversationId === config.conversationId && data.position) {
      tab.offsets.push(data.position.offset);
      tab.epochs.push(data.position.epoch);
      tab.last = data.position;
    }
  };
  socket.on("connect", () => {
    tab.connects += 1;
    tab.connected = true;
    tab.log.push("connect");
    const request = { conversationId: config.conversationId };
    if (tab.last) request.position = tab.last;
    socket.emit("conversation:join", request, (reply) => {
      tab.joins.push({
        ok: reply.ok,
        recovered: reply.recovered ?? null,
        position: reply.position,
        error: reply.error?.code ?? null,
      });
      if (reply.ok && tab.last === null) tab.last = reply.position;
    });
  });
  socket.on("connect_error", (err) => {
    tab.connectErrors += 1;
    if (!socket.active) tab.log.push(`refused:${err.data?.code ?? err.message}`); // no retry
  });
  socket.on("disconnect", (reason) => {
    tab.connected = false;
    tab.log.push(`disconnect:${reason}`);
  });
  socket.onAny((event, ...args) => {
    const last = args[args.length - 1];
    if (typeof last === "function") {
      args.pop();
      last();
    }
    if (event === "server:draining") tab.log.push("draining");
    else if (event === "sync:required") tab.log.push(`sync:${tab.offsets.length}`);
    else if (event === "error") tab.log.push(`error:${args[0]?.code}`);
    else record(args[0]);
  });
  return tab;
});

const report = () =>
  tabs.map(({ socket, connected, last, ...rest }) => rest);

const input = createInterface({ input: process.stdin });
input.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  if (command.op === "status") {
    print({
      type: "status",
      connected: tabs.filter((tab) => tab.connected && tab.joins.length === tab.connects).length,
      connects: tabs.reduce((sum, tab) => sum + tab.connects, 0),
    });
  } else if (command.op === "report") {
    print({ type: "report", tabs: report() });
  }
});
const end = () => {
  for (const tab of tabs) tab.socket.disconnect();
  process.exit(0);
};
input.on("close", end);
setTimeout(end, config.timeout ?? 60000).unref();
