// The part of node:assert/strict that client/js/herald.test.js uses.
class AssertionError extends Error {
  constructor(message) {
    super(message);
    this.name = 'AssertionError';
  }
}

const show = (v) => {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
};

function deepEq(a, b) {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => deepEq(x, b[i]));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEq(a[k], b[k]));
}

function ok(v, msg) {
  if (!v) throw new AssertionError(msg || `expected a truthy value, got ${show(v)}`);
}

function equal(a, b, msg) {
  if (!Object.is(a, b)) throw new AssertionError(msg || `${show(a)} !== ${show(b)}`);
}

function notEqual(a, b, msg) {
  if (Object.is(a, b)) throw new AssertionError(msg || `${show(a)} === ${show(b)}`);
}

function deepEqual(a, b, msg) {
  if (!deepEq(a, b)) throw new AssertionError(msg || `${show(a)} does not deep-equal ${show(b)}`);
}

function check(err, expected) {
  if (expected === undefined) return;
  if (expected instanceof RegExp) {
    if (!expected.test(String(err && err.message !== undefined ? err.message : err))) {
      throw new AssertionError(`error ${err} does not match ${expected}`);
    }
    return;
  }
  if (typeof expected === 'function' && expected(err) !== true) {
    throw new AssertionError(`error ${err} failed validation`);
  }
}

async function rejects(p, expected) {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    check(err, expected);
    return;
  }
  throw new AssertionError('expected a rejection');
}

function throws(fn, expected) {
  try {
    fn();
  } catch (err) {
    check(err, expected);
    return;
  }
  throw new AssertionError('expected an exception');
}

const assert = Object.assign(ok, { ok, equal, notEqual, deepEqual, rejects, throws, AssertionError });
export default assert;
export { ok, equal, notEqual, deepEqual, rejects, throws, AssertionError };
