import { describe, expect, it } from 'vitest';
import { sameRecord } from './named-diff.js';

describe('sameRecord', () => {
  it('compares flat records by keys and values, key order aside', () => {
    expect(sameRecord({ app: 'web', env: 'prod' }, { env: 'prod', app: 'web' })).toBe(true);
    expect(sameRecord({}, {})).toBe(true);
    expect(sameRecord({ app: 'web' }, { app: 'db' })).toBe(false);
    expect(sameRecord({ app: 'web' }, { app: 'web', env: 'prod' })).toBe(false);
    expect(sameRecord({ app: 'web', env: 'prod' }, { app: 'web' })).toBe(false);
    expect(sameRecord<Record<string, string | undefined>>({ a: undefined }, { b: undefined })).toBe(
      false,
    );
  });
});
