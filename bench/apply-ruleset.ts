// Applies a full sync (binary, PolicyUpdate.encode) with the agent's renderer in the current
// network namespace and prints {"applyMs": n, "elements": n} (group ranges). Used by
// dataplane.ts inside a lab.
import { readFileSync } from 'node:fs';
import { DEFAULT_FLOW_TABLE, planFull, planUpdate } from '@bulkhead/agent';
import { createNftDriver } from '@bulkhead/nftables';
import { PolicyUpdate } from '@bulkhead/proto';

const update = PolicyUpdate.decode(readFileSync(process.argv[2]!));
const failsafe = { controlPlane: [], admin: undefined };
const { next } = planUpdate(undefined, update, failsafe, DEFAULT_FLOW_TABLE);
const driver = createNftDriver({ backend: 'libnftables' });
const t0 = performance.now();
await driver.apply(planFull(next));
const applyMs = performance.now() - t0;
driver.close();
const elements = update.groups.reduce((n, g) => n + g.added.length, 0);
console.log(JSON.stringify({ applyMs: Math.round(applyMs), elements }));
