// Bundles the control-plane binary, `dist/program.js` and every dependency it imports, into one
// file, `dist/main.js` (run by `npm run build`, after tsc). Node then starts it without resolving,
// reading and compiling ~900 modules one by one: ~0.8 s of CPU less per start (bench/README.md,
// "Start-up"), which is what an agent fleet waits for after a restart.
// Left outside the bundle, imported from node_modules as before: what loads files from its own
// folder at run time (a native addon, pino's worker transports, swagger's page and its package
// file). The bundle sits beside program.js in dist/, so `import.meta.url`-relative paths
// (package.json, the console's files) hold for both.
import { build } from 'esbuild';

await build({
  entryPoints: [new URL('dist/program.js', import.meta.url).pathname],
  outfile: new URL('dist/main.js', import.meta.url).pathname,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['better-sqlite3', 'pino', '@fastify/swagger', '@fastify/swagger-ui'],
  // CommonJS dependencies inside an ES module bundle still call `require` for Node's built-ins.
  banner: {
    js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
