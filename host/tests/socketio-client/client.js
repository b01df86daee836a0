// A real Socket.IO v5 client (the official socket.io-client), driven by the
// integration tests: `node client.js URL AUTH_JSON [TRANSPORTS]`.
// Prints one JSON line per thing that happens; reads commands as JSON lines:
//   {"cmd": "ack", "notificationId": "..."}   emit `acknowledge`, print the reply
//   {"cmd": "emit", "event": "...", "data": ...}  emit an event, without a reply
//   {"cmd": "close"}                           disconnect and exit
const { io } = require("socket.io-client");
const readline = require("readline");

const [url, auth, transports] = process.argv.slice(2);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

const socket = io(url, {
  auth: JSON.parse(auth),
  transports: (transports || "websocket").split(","),
  reconnection: false,
});
socket.on("connect", () => print({ type: "connect", id: socket.id }));
socket.on("connect_error", (err) => {
  print({ type: "connect_error", message: err.message });
  process.exit(0);
});
socket.on("disconnect", (reason) => print({ type: "disconnect", reason }));
socket.onAny((event, data) => print({ type: "event", event, data }));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.cmd === "ack") {
    socket.emit("acknowledge", { notificationId: command.notificationId }, (reply) =>
      print({ type: "ack", data: reply }),
    );
  } else if (command.cmd === "emit") {
    socket.emit(command.event, command.data);
  } else if (command.cmd === "close") {
    socket.close();
    process.exit(0);
  }
});
