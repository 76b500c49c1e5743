import { describe, expect, it } from 'vitest';
import type { Selector } from './model.js';
import { matchesSelector } from './selector.js';

const db = { app: 'payments', role: 'db', env: 'prod' };
const web = { app: 'payments', role: 'web' };
const bare = {};

function selects(selector: Selector): string[] {
  return Object.entries({ db, web, bare })
    .filter(([, labels]) => matchesSelector(selector, labels))
    .map(([name]) => name);
}

describe('matchesSelector', () => {
  it('empty selector selects everything', () => {
    expect(selects({})).toEqual(['db', 'web', 'bare']);
    expect(selects({ matchLabels: {}, matchExpressions: [] })).toEqual(['db', 'web', 'bare']);
  });

  it('matchLabels ANDs its pairs', () => {
    expect(selects({ matchLabels: { app: 'payments' } })).toEqual(['db', 'web']);
    expect(selects({ matchLabels: { app: 'payments', role: 'db' } })).toEqual(['db']);
    expect(selects({ matchLabels: { app: 'payments', role: 'cache' } })).toEqual([]);
  });

  it('In requires the key and one of the values', () => {
    expect(
      selects({ matchExpressions: [{ key: 'role', operator: 'In', values: ['db', 'cache'] }] }),
    ).toEqual(['db']);
  });

  it('NotIn also matches workloads without the key', () => {
    expect(
      selects({ matchExpressions: [{ key: 'role', operator: 'NotIn', values: ['db'] }] }),
    ).toEqual(['web', 'bare']);
  });

  it('Exists and DoesNotExist look at the key only', () => {
    expect(selects({ matchExpressions: [{ key: 'env', operator: 'Exists' }] })).toEqual(['db']);
    expect(selects({ matchExpressions: [{ key: 'env', operator: 'DoesNotExist' }] })).toEqual([
      'web',
      'bare',
    ]);
  });

  it('ANDs matchLabels and every expression', () => {
    const selector: Selector = {
      matchLabels: { app: 'payments' },
      matchExpressions: [
        { key: 'role', operator: 'In', values: ['db', 'web'] },
        { key: 'env', operator: 'DoesNotExist' },
      ],
    };
    expect(selects(selector)).toEqual(['web']);
  });

  it('does not match inherited object properties', () => {
    expect(
      matchesSelector({ matchExpressions: [{ key: 'toString', operator: 'Exists' }] }, {}),
    ).toBe(false);
  });
});
