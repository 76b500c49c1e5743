import { describe, expect, it } from 'vitest';
import { releaseMemory } from './heap.js';

describe('releaseMemory', () => {
  it('collects garbage the program no longer reaches, without node --expose-gc', async () => {
    expect((globalThis as { gc?: unknown }).gc).toBeUndefined();
    let collected = false;
    const registry = new FinalizationRegistry(() => {
      collected = true;
    });
    (() => registry.register({ big: new Array(1000).fill(1) }, 'x'))();
    releaseMemory();
    // Finalizers run in a later task.
    for (let i = 0; i < 20 && !collected; i++) await new Promise((r) => setTimeout(r, 10));
    expect(collected).toBe(true);
  });
});
