// The agent state hash (wiring contract 2): what an agent holds, as one string. A group's
// digest is an order-independent sum of its ranges' hashes, kept up to date from the ranges a
// delta adds and removes, so a change costs the ranges it moves, not the group's size. The hash
// is derived from content only, so it is the same after a control-plane restart. Must not know
// streams, encoding or the store.
import * as crypto from 'node:crypto';
import type { CalcDelta, IpRange } from '@bulkhead/policy';
import type { GroupRule, GroupRuleSet } from '@bulkhead/proto';

const MOD = 1n << 256n;

/**
 * sha256 hex of a short text. One is computed per agent a change reaches: the one-shot
 * `crypto.hash` (Node >= 20.12) costs a quarter of a Hash object; same digest either way.
 */
const sha256: (text: string) => string =
  typeof crypto.hash === 'function'
    ? (text) => crypto.hash('sha256', text, 'hex')
    : (text) => crypto.createHash('sha256').update(text).digest('hex');

function rangeHash(r: IpRange): bigint {
  return BigInt(`0x${sha256(`${r.family}:${r.from}-${r.to}`)}`);
}

const sum = (ranges: readonly IpRange[]) => ranges.reduce((s, r) => s + rangeHash(r), 0n) % MOD;

export interface AgentHasher {
  /** Updates the group digests from one delta (call for every delta, in order). */
  apply(delta: CalcDelta): void;
  /** The state hash of an agent holding `ruleSet` and the current contents of its groups. */
  hash(ruleSet: GroupRuleSet): string;
}

/** The sorted ids of the groups some rule names (memoised: `rules` arrays are shared, frozen). */
const groupIds = new WeakMap<readonly GroupRule[], string[]>();
export function groupsOf(ruleSet: GroupRuleSet): string[] {
  let ids = groupIds.get(ruleSet.rules);
  if (!ids) {
    ids = [...new Set(ruleSet.rules.flatMap((r) => r.groups))].sort();
    groupIds.set(ruleSet.rules, ids);
  }
  return ids;
}

export function createAgentHasher(): AgentHasher {
  const digests = new Map<string, bigint>();
  /** rules array -> hash of its groups' ids and digests; dropped when any group changes. */
  let parts = new WeakMap<readonly GroupRule[], string>();
  return {
    apply(delta) {
      if (delta.groups.length > 0) parts = new WeakMap();
      for (const g of delta.groups) {
        if (g.deleted) digests.delete(g.id);
        else {
          const before = g.created ? 0n : (digests.get(g.id) ?? 0n);
          digests.set(g.id, (before + sum(g.added) - sum(g.removed) + MOD) % MOD);
        }
      }
    },
    hash(ruleSet) {
      let part = parts.get(ruleSet.rules);
      if (part === undefined) {
        const h = crypto.createHash('sha256');
        for (const id of groupsOf(ruleSet)) {
          h.update(`${id}\0${(digests.get(id) ?? 0n).toString(16)}\n`);
        }
        part = h.digest('hex');
        parts.set(ruleSet.rules, part);
      }
      return sha256(`${ruleSet.hash}\n${part}`);
    },
  };
}
