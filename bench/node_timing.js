// What bench/node_open.js and bench/node_calls.js share: their arguments (ITERS DEPTH), the
// descent of DEPTH JavaScript frames (not tail calls), an untimed warm-up at the bottom (which
// also lets V8 compile the loop), and the line they print, as bench/fdbench.c does:
//   op=NAME depth=30 iters=200000 ns_per_op=1812.3 fastest_ns_per_op=1790.1
// Removes the perf map V8 writes when told to (/tmp/perf-PID.map) when the process exits.
'use strict';
const fs = require('fs');

const CHUNK = 1000;

// Runs `ops(n)` (n operations) ITERS times in chunks of CHUNK * `scale` operations, DEPTH
// frames deep, and prints the mean and the fastest chunk per operation.
function measure(name, ops, scale = 1) {
  const [iters, depth] = process.argv.slice(2).map(Number);
  if (!(iters >= CHUNK) || !(depth >= 0)) {
    console.error(`usage: node ${name}.js ITERS DEPTH (ITERS >= ${CHUNK})`);
    process.exit(2);
  }
  process.on('exit', () => fs.rmSync(`/tmp/perf-${process.pid}.map`, { force: true }));
  const perChunk = CHUNK * scale;
  const timed = () => {
    ops(Math.min(iters * scale, 20 * perChunk));
    const chunks = Math.floor(iters / CHUNK);
    let fastest = Infinity;
    const start = process.hrtime.bigint();
    for (let c = 0; c < chunks; c++) {
      const t0 = process.hrtime.bigint();
      ops(perChunk);
      fastest = Math.min(fastest, Number(process.hrtime.bigint() - t0));
    }
    const total = Number(process.hrtime.bigint() - start);
    const n = chunks * perChunk;
    return `op=${name.replace('_', '-')} depth=${depth} iters=${n} ` +
      `ns_per_op=${(total / n).toFixed(2)} fastest_ns_per_op=${(fastest / perChunk).toFixed(2)}`;
  };
  const descend = (d) => {
    // The `+ ''` keeps the call from being a tail call: the frame stays on the stack.
    return d === 0 ? timed() : descend(d - 1) + '';
  };
  console.log(descend(depth));
}

module.exports = { measure };
