// Bundles the control-plane binary, `dist/program.js` and every dependency it imports, into one
// file, `dist/main.cjs` (run by `npm run build`, after tsc). Node then starts it without resolving,
// reading and compiling ~900 modules one by one: ~0.8 s of CPU less per start (bench/README.md,
// "Start-up"), which is what an agent fleet waits for after a restart. The binary, `dist/main.js`,
// is launcher.mjs: it runs the bundle with a V8 code cache (`dist/main.cjs.cache`) that a training
// run writes here, a control plane started on a throwaway data dir and stopped once it listens,
// so the cache holds what a start compiles (~0.2 s of CPU less per start, bench/README.md, "Tenth
// pass"). CommonJS, because Node 20 takes a code cache for a script (node:vm), not for a module.
// Left outside the bundle, imported from node_modules as before: what loads files from its own
// folder at run time (a native addon, pino's worker transports, swagger's page and its package
// file). The bundle sits beside program.js in dist/, so paths relative to its URL (package.json,
// the console's files) hold for both.
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { build } from 'esbuild';

const dist = new URL('dist/', import.meta.url).pathname;
await build({
  entryPoints: [join(dist, 'program.js')],
  outfile: join(dist, 'main.cjs'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['better-sqlite3', 'pino', '@fastify/swagger', '@fastify/swagger-ui'],
  // `import.meta.url` of the modules bundled: the bundle's own, as in the ES module they were.
  define: { 'import.meta.url': '__bundleUrl' },
  banner: { js: "const __bundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
});
const main = join(dist, 'main.js');
copyFileSync(new URL('launcher.mjs', import.meta.url), main);
chmodSync(main, 0o755);

// The training run. Without it (no loopback to listen on, say) the binary runs without a cache.
const cache = join(dist, 'main.cjs.cache');
rmSync(cache, { force: true });
const dataDir = mkdtempSync(join(tmpdir(), 'bulkhead-bundle-'));
try {
  const args = [
    '--data-dir',
    dataDir,
    '--api-listen',
    '127.0.0.1:0',
    '--grpc-listen',
    '127.0.0.1:0',
  ];
  const child = spawn(process.execPath, [main, ...args], {
    env: { ...process.env, BULKHEAD_WRITE_CODE_CACHE: '1' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const listening = await new Promise((resolve) => {
    child.once('exit', () => resolve(false));
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.includes('"control plane listening"')) resolve(true);
    });
  });
  child.kill('SIGTERM');
  const code = await exited;
  if (!listening || code !== 0) {
    rmSync(cache, { force: true });
    console.warn(
      `bundle: no code cache (the training run ${listening ? `exited ${code}` : 'did not listen'})`,
    );
  }
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}
