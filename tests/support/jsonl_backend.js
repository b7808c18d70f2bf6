// jsonl_backend.js: a statsd 0.9.0 backend that appends one JSON line per flush.
// statsd's own console backend and admin port print util.inspect output (not JSON, and
// arrays truncated after 100 items), so tests read the flushed values from this file instead.
// Config: { jsonl: { file: "/abs/path/statsd-flush.jsonl" } }.
"use strict";
const fs = require("fs");

exports.init = function (startupTime, config, events) {
  const file = config.jsonl && config.jsonl.file;
  if (!file) {
    return false; // statsd logs the failed backend and exits: a clear start-up error
  }
  let lastFlush = startupTime;
  events.on("flush", function (timestamp, metrics) {
    const sets = {};
    for (const key of Object.keys(metrics.sets)) {
      sets[key] = metrics.sets[key].values(); // statsd's own Set: values() is an array
    }
    const line = JSON.stringify({
      timestamp: timestamp,
      counters: metrics.counters,
      gauges: metrics.gauges,
      timers: metrics.timers,
      timer_counters: metrics.timer_counters,
      timer_data: metrics.timer_data,
      counter_rates: metrics.counter_rates,
      sets: sets,
      pctThreshold: metrics.pctThreshold,
    });
    // Synchronous append: one whole line per flush, visible to readers as soon as flush returns.
    fs.appendFileSync(file, line + "\n");
    lastFlush = timestamp;
  });
  events.on("status", function (write) {
    write(null, "jsonl", "lastFlush", lastFlush);
  });
  return true;
};
