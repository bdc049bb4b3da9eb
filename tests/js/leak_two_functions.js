// Leaks fds from two JavaScript functions, for tests/suite/runtime_node.rs: `leakFile` opens a
// file with fs.openSync and never closes it, `leakSocket` connects a Unix-domain socket and
// never closes it (made within the call, unlike a TCP connect, which node makes on a later
// tick). Both are called from one hot loop, as from a server's request loop: V8 compiles the
// loop and, left to itself, inlines `leakFile` into it. Usage: node leak_two_functions.js DIR
// COUNT. Prints `LEAK file FD` and `LEAK socket FD` for each fd leaked, then
// `CHECKPOINT leaked` once every connection is accepted (nothing changes after), and exits at
// the next line on stdin.
'use strict';
const fs = require('fs');
const net = require('net');
const path = require('path');

const dir = process.argv[2];
const count = Number(process.argv[3]);
const socketPath = path.join(dir, 'leak.sock');
// The loop closes all but one in KEEP_EVERY of leakFile's fds, as a server that forgets to
// close them on one path of many.
const KEEP_EVERY = 40;

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
  const onConnect = () => {
    connected += 1;
    settled();
  };
  const files = [];
  const sockets = [];
  for (let i = 0; i < count * KEEP_EVERY; i++) {
    const fd = leakFile();
    if (i % KEEP_EVERY === 0) {
      files.push(fd);
      sockets.push(leakSocket(onConnect));
    } else {
      fs.closeSync(fd);
    }
  }
  files.forEach((fd) => console.log('LEAK file', fd));
  sockets.forEach((fd) => console.log('LEAK socket', fd));
});

function settled() {
  if (accepted === count && connected === count) {
    process.stdin.once('data', () => process.exit(0));
    console.log('CHECKPOINT leaked');
  }
}
