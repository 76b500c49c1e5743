// Vitest glue: one lab per describe block, destroyed afterwards even when creation failed
// half-way, with the process logs printed (and kept) when a test failed.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { createLab, type Lab, type LabOptions } from './lab.js';

/** Registers beforeAll/afterAll hooks; call the returned function inside tests. */
export function useLab(options: LabOptions): () => Lab {
  let lab: Lab | undefined;
  let failed = false;
  beforeAll(async () => {
    lab = await createLab(options);
  });
  afterEach(({ task }) => {
    if (task.result?.state !== 'fail' || !lab) return;
    failed = true;
    console.error(`lab ${lab.name} logs (kept): ${lab.logDir}\n${dumpLogs(lab.logDir)}`);
  });
  afterAll(async () => {
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
