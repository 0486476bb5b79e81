// The part of node:test that client/js/herald.test.js uses, so that the
// same file runs in a browser. Tests run one at a time, in order; the
// outcome is left in window.testResults for the driver to read.
const tests = [];
const results = { done: false, passed: [], failed: [] };
window.testResults = results;

export function test(name, fn) {
  tests.push({ name, fn });
  if (tests.length === 1) setTimeout(run, 0);
}

async function run() {
  const out = document.getElementById('out');
  for (const { name, fn } of tests) {
    const cleanups = [];
    const t = { name, after: (f) => cleanups.push(f) };
    try {
      await fn(t);
      results.passed.push(name);
      out.textContent += `ok ${name}\n`;
    } catch (err) {
      results.failed.push({ name, error: String(err && err.stack ? err.stack : err) });
      out.textContent += `FAIL ${name}: ${err}\n`;
    }
    for (const f of cleanups.reverse()) {
      try {
        await f();
      } catch {
        // a cleanup's failure does not change the test's outcome
      }
    }
  }
  results.done = true;
}
