// Vitest glue: one lab per describe block, destroyed afterwards even when creation failed
// half-way, with the process logs printed (and kept) when a test or a suite hook failed.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { createLab } from './lab.js';
import type { Lab, LabOptions } from './types.js';

/** Registers beforeAll/afterAll hooks; call the returned function inside tests. */
export function useLab(options: LabOptions): () => Lab {
  let lab: Lab | undefined;
  let failed = false;
  beforeAll(async () => {
    lab = await createLab(options);
  });
  const report = () => {
    if (!lab) return;
    failed = true;
    console.error(`lab ${lab.name} logs (kept): ${lab.logDir}\n${dumpLogs(lab.logDir)}`);
  };
  afterEach(({ task }) => {
    if (task.result?.state === 'fail') report();
  });
  // biome-ignore lint/correctness/noEmptyPattern: vitest parses the first parameter as fixtures and hands the suite over second.
  afterAll(async ({}, suite) => {
    // A failing beforeAll (say, agents that never connect) skips every test, so afterEach
    // never sees it: the suite result is the only place it shows.
    if (suite.result?.state === 'fail' && !failed) report();
    await lab?.destroy({ keepLogs: failed });
  });
  return () => {
    if (!lab) throw new Error('lab not created: is useLab() called at describe level?');
    return lab;
  };
}

function dumpLogs(dir: string, lines = 20): string {
  return readdirSync(dir)
    .sort()
    .map((f) => {
      const text = readFileSync(join(dir, f), 'utf8').trimEnd();
      return `--- ${f}\n${text.split('\n').slice(-lines).join('\n')}`;
    })
    .join('\n');
}
