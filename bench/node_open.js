// open+close of /dev/null from JavaScript (fs.openSync, fs.closeSync: libuv's synchronous
// calls on the main thread), for the runtime rows of scripts/bench.sh:
//
//   node bench/node_open.js ITERS DEPTH
//
// Descends DEPTH JavaScript frames (not tail calls) and runs the timed loop from the bottom,
// after an untimed warm-up at the same depth (which also lets V8 compile the loop). Prints
// the mean over the whole loop and its fastest chunk of 1,000 operations, as bench/fdbench.c:
//   op=node-open depth=30 iters=200000 ns_per_op=1812.3 fastest_ns_per_op=1790.1
// Removes the perf map V8 writes when told to (/tmp/perf-PID.map) when it exits.
'use strict';
const fs = require('fs');

const CHUNK = 1000;
const [iters, depth] = process.argv.slice(2).map(Number);
if (!(iters >= CHUNK) || !(depth >= 0)) {
  console.error('usage: node node_open.js ITERS DEPTH (ITERS >= 1000)');
  process.exit(2);
}
process.on('exit', () => fs.rmSync(`/tmp/perf-${process.pid}.map`, { force: true }));

function openClose(n) {
  for (let i = 0; i < n; i++) {
    fs.closeSync(fs.openSync('/dev/null', 'r'));
  }
}

function timed() {
  openClose(Math.min(iters, 20 * CHUNK));
  const chunks = Math.floor(iters / CHUNK);
  let fastest = Infinity;
  const start = process.hrtime.bigint();
  for (let c = 0; c < chunks; c++) {
    const t0 = process.hrtime.bigint();
    openClose(CHUNK);
    fastest = Math.min(fastest, Number(process.hrtime.bigint() - t0));
  }
  const total = Number(process.hrtime.bigint() - start);
  const n = chunks * CHUNK;
  return `op=node-open depth=${depth} iters=${n} ns_per_op=${(total / n).toFixed(2)} ` +
    `fastest_ns_per_op=${(fastest / CHUNK).toFixed(2)}`;
}

function descend(d) {
  // The `+ ''` keeps the call from being a tail call: the frame stays on the stack.
  return d === 0 ? timed() : descend(d - 1) + '';
}

console.log(descend(depth));
