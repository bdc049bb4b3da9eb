// JavaScript made of small methods and no fds, for the runtime rows of scripts/bench.sh: what
// the options `fdguard run` gives node cost by themselves (inlining off costs code like this
// most):
//
//   node bench/node_calls.js ITERS DEPTH
//
// Each operation adds two small vectors through methods and takes a length; 100 × ITERS
// operations (one takes nanoseconds; the clock's own cost must not count) DEPTH frames deep,
// timed and printed by bench/node_timing.js:
//   op=node-calls depth=30 iters=20000000 ns_per_op=44.5 fastest_ns_per_op=40.2
'use strict';
const { measure } = require('./node_timing');

class Vec {
  constructor(x, y) {
    this.x = x;
    this.y = y;
  }

  add(other) {
    return new Vec(this.x + other.x, this.y + other.y);
  }

  length() {
    return Math.hypot(this.x, this.y);
  }
}

let sink = 0;
measure('node_calls', (n) => {
  let v = new Vec(0, 0);
  for (let i = 0; i < n; i++) {
    v = v.add(new Vec(1, i & 7));
    sink += v.length() % 3;
  }
  return sink;
}, 100);
