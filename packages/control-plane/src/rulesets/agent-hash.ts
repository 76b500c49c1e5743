// The agent state hash (wiring contract 2): what an agent holds, as one string. A group's
// digest is an order-independent sum of its ranges' hashes, kept up to date from the ranges a
// delta adds and removes, so a change costs the ranges it moves, not the group's size. The hash
// is derived from content only, so it is the same after a control-plane restart. Must not know
// streams, encoding or the store.
//
// Per agent it is two halves put side by side, no digest computed: 128 bits of the rule set's
// hash (workload, modes, rules) and 128 bits of the hash of its groups' ids and digests, which
// is computed once per rules array (shared by the workloads with the same rules) and change. A
// change that reaches every agent then costs one string per agent, not one sha256 each; two
// states share a hash only if a 128-bit sha256 prefix collides.
import * as crypto from 'node:crypto';
import type { CalcDelta, IpRange } from '@bulkhead/policy';
import type { GroupRule, GroupRuleSet } from '@bulkhead/proto';

const MOD = 1n << 256n;
/** Hex digits of each half of an agent state hash (128 bits). */
const HALF = 32;

/**
 * sha256 hex of a short text (one per range a change moves): the one-shot `crypto.hash`
 * (Node >= 20.12) costs a quarter of a Hash object; same digest either way.
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
        part = h.digest('hex').slice(0, HALF);
        parts.set(ruleSet.rules, part);
      }
      return ruleSet.hash.slice(0, HALF) + part;
    },
  };
}
