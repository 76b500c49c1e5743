#!/usr/bin/env node
// The control-plane binary (`dist/main.js`, copied there by bundle.mjs): runs the bundle,
// `dist/main.cjs`, with the V8 code cache made for it at build time (`dist/main.cjs.cache`), so a
// start does not compile its ~4.6 MB of JavaScript again: a restarted control plane serves its
// fleet sooner. A cache this V8 does not take (another Node, other V8 flags) costs nothing but
// its read: V8 compiles as it would have. `BULKHEAD_WRITE_CODE_CACHE=1` (the build's training run
// only) writes the cache at exit, with every function compiled until then.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';

const file = fileURLToPath(new URL('main.cjs', import.meta.url));
const cacheFile = `${file}.cache`;
let cachedData;
try {
  cachedData = readFileSync(cacheFile);
} catch {
  // No cache: compiled as usual.
}
// CommonJS's own wrapper, on the bundle's first line (its `#!` emptied), so lines keep their numbers.
const source = readFileSync(file, 'utf8').replace(/^#!.*/, '');
const script = new Script(
  `(function (exports, require, module, __filename, __dirname) {${source}\n})`,
  { filename: file, cachedData },
);
if (process.env.BULKHEAD_WRITE_CODE_CACHE === '1') {
  process.once('exit', () => writeFileSync(cacheFile, script.createCachedData()));
}
const module = { exports: {} };
script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file));
