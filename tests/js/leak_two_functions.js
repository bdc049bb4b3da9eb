// Leaks fds from two JavaScript functions, for tests/suite/runtime_node.rs: `leakFile` opens a
// file with fs.openSync and never closes it, `leakSocket` connects a Unix-domain socket and
// never closes it (made within the call, unlike a TCP connect, which node makes on a later
// tick). Usage: node leak_two_functions.js DIR COUNT. Prints `LEAK file FD` and
// `LEAK socket FD` for each fd leaked, then `CHECKPOINT leaked` once every connection is
// accepted (nothing changes after), and exits at the next line on stdin.
'use strict';
const fs = require('fs');
const net = require('net');
const path = require('path');

const dir = process.argv[2];
const count = Number(process.argv[3]);
const socketPath = path.join(dir, 'leak.sock');

function leakFile() {
  return fs.openSync('/etc/hostname', 'r');
}

function leakSocket(onConnect) {
  const socket = net.connect(socketPath, onConnect);
  return socket._handle.fd;
}

fs.rmSync(socketPath, { force: true });
let accepted = 0;
let connected = 0;
const held = [];
const server = net.createServer((c) => {
  held.push(c);
  accepted += 1;
  settled();
});
server.listen(socketPath, () => {
  for (let i = 0; i < count; i++) {
    console.log('LEAK file', leakFile());
  }
  for (let i = 0; i < count; i++) {
    console.log('LEAK socket', leakSocket(() => {
      connected += 1;
      settled();
    }));
  }
});

function settled() {
  if (accepted === count && connected === count) {
    process.stdin.once('data', () => process.exit(0));
    console.log('CHECKPOINT leaked');
  }
}
