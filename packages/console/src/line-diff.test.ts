import { describe, expect, it } from 'vitest';
import { jsonDiff } from './line-diff.js';

const text = (before: unknown, after: unknown) =>
  jsonDiff(before, after).map((l) => `${l.op}${l.text}`);

describe('jsonDiff', () => {
  it('marks changed lines and keeps the common ones', () => {
    expect(text({ a: 1, b: [1, 2] }, { a: 1, b: [1, 3] })).toEqual([
      ' {',
      '   "a": 1,',
      '   "b": [',
      '     1,',
      '-    2',
      '+    3',
      '   ]',
      ' }',
    ]);
  });

  it('shows an added object as all additions and a removed one as all removals', () => {
    expect(text(undefined, { a: 1 })).toEqual(['+{', '+  "a": 1', '+}']);
    expect(text({ a: 1 }, undefined)).toEqual(['-{', '-  "a": 1', '-}']);
    expect(text({ a: 1 }, { a: 1 }).every((l) => l.startsWith(' '))).toBe(true);
  });
});
