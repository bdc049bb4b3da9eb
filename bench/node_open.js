// open+close of /dev/null from JavaScript (fs.openSync, fs.closeSync: libuv's synchronous
// calls on the main thread), for the runtime rows of scripts/bench.sh:
//
//   node bench/node_open.js ITERS DEPTH
//
// ITERS operations DEPTH JavaScript frames deep, timed and printed by bench/node_timing.js:
//   op=node-open depth=30 iters=200000 ns_per_op=1812.3 fastest_ns_per_op=1790.1
'use strict';
const fs = require('fs');
const { measure } = require('./node_timing');

measure('node_open', (n) => {
  for (let i = 0; i < n; i++) {
    fs.closeSync(fs.openSync('/dev/null', 'r'));
  }
});
