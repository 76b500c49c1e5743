// Applies a RuleSet file (binary, RuleSet.encode) with the agent's renderer in the current
// network namespace and prints {"applyMs": n, "elements": n}. Used by dataplane.ts inside a lab.
import { readFileSync } from 'node:fs';
import { renderRuleSet } from '@bulkhead/agent';
import { createNftDriver } from '@bulkhead/nftables';
import { RuleSet } from '@bulkhead/proto';

const rs = RuleSet.decode(readFileSync(process.argv[2]!));
const driver = createNftDriver({ backend: 'libnftables' });
const t0 = performance.now();
await driver.apply(renderRuleSet(rs, { controlPlane: [], admin: undefined }));
const applyMs = performance.now() - t0;
driver.close();
console.log(JSON.stringify({ applyMs: Math.round(applyMs), elements: rs.entries.length }));
