import { Direction, Verdict } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { mapCounters, mergeCounters } from './counters.js';
import { fixtureChain, fixtureRuleSet } from './fixture.test-util.js';

const counter = (name: string, packets: number, bytes: number, table = 'bulkhead') => ({
  counter: { family: 'inet', table, name, handle: 3, packets, bytes },
});

describe('mapCounters', () => {
  const rs = fixtureRuleSet();

  it('maps rule and default counters back to rule ids, directions and verdicts', () => {
    const got = mapCounters(
      [
        counter(`${fixtureChain(2)}_allowed`, 3, 180),
        counter(`${fixtureChain(1)}_would_deny`, 1, 60),
        counter(`${fixtureChain(3)}_denied`, 2, 120),
        counter('in_default_denied', 5, 300),
        counter('out_default_would_deny', 4, 240),
      ],
      rs,
    );
    expect(got).toEqual([
      {
        ruleId: 'web/ingress/0',
        direction: Direction.DIRECTION_INGRESS,
        verdict: Verdict.VERDICT_ALLOWED,
        packets: 3,
        bytes: 180,
      },
      {
        ruleId: 'web/egress/1',
        direction: Direction.DIRECTION_EGRESS,
        verdict: Verdict.VERDICT_WOULD_DENY,
        packets: 1,
        bytes: 60,
      },
      {
        ruleId: 'web/ingress/1',
        direction: Direction.DIRECTION_INGRESS,
        verdict: Verdict.VERDICT_DENIED,
        packets: 2,
        bytes: 120,
      },
      {
        ruleId: 'default',
        direction: Direction.DIRECTION_INGRESS,
        verdict: Verdict.VERDICT_DENIED,
        packets: 5,
        bytes: 300,
      },
      {
        ruleId: 'default',
        direction: Direction.DIRECTION_EGRESS,
        verdict: Verdict.VERDICT_WOULD_DENY,
        packets: 4,
        bytes: 240,
      },
    ]);
  });

  it('leaves out zeros, foreign tables, unknown names and rules the RuleSet lacks', () => {
    const got = mapCounters(
      [
        counter(`${fixtureChain(2)}_allowed`, 0, 0),
        counter(`${fixtureChain(2)}_allowed`, 9, 9, 'other'),
        counter('mystery', 1, 1),
        counter('r9_allowed', 1, 1),
        { table: { family: 'inet', name: 'bulkhead' } },
      ],
      rs,
    );
    expect(got).toEqual([]);
  });
});

describe('mergeCounters', () => {
  it('sums equal keys and keeps different ones apart', () => {
    const a = {
      ruleId: 'x',
      direction: Direction.DIRECTION_INGRESS,
      verdict: Verdict.VERDICT_ALLOWED,
      packets: 1,
      bytes: 10,
    };
    const b = { ...a, verdict: Verdict.VERDICT_DENIED };
    const merged = mergeCounters([a], [{ ...a, packets: 2, bytes: 20 }, b]);
    expect(merged).toEqual([{ ...a, packets: 3, bytes: 30 }, b]);
    expect(a.packets).toBe(1);
  });
});
