#!/usr/bin/env node
import { run } from './run.js';

// A reader that stops early (`bulkhead flows | head`) closes the pipe: end quietly, as cat does.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(0);
});

const code = await run(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
process.exitCode = code;
