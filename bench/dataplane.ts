// Data-plane cost of enforcement: TCP connections per second between two namespace hosts with
// no firewall, and with a Bulkhead policy in enforce mode whose ingress allows an IP list of N
// addresses (one interval set of N elements) and the client's own group. Also the time to load
// each policy (a full sync in group form, as the agent renders it). Prints JSON.
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLab } from '@bulkhead/lab';
import { createCalculator, type PolicyState, toAddressRange } from '@bulkhead/policy';
import { PolicyUpdate } from '@bulkhead/proto';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const SIZES = (process.env.BENCH_SIZES ?? '1000,20000,100000').split(',').map(Number);

function updateFor(clientAddr: string, serverAddr: string, n: number): PolicyUpdate {
  // n allowed peers on distinct, non-adjacent addresses so the compiler cannot merge them.
  const cidrs: string[] = [];
  for (let i = 0; i < n; i++)
    cidrs.push(`172.${16 + (i >> 15)}.${(i >> 7) & 255}.${(i & 127) * 2}`);
  const state: PolicyState = {
    workloads: [
      {
        name: 'server',
        addresses: [serverAddr],
        labels: { role: 'server' },
        mode: { ingress: 'enforce', egress: 'monitor' },
      },
      {
        name: 'client',
        addresses: [clientAddr],
        labels: { role: 'client' },
        mode: { ingress: 'monitor', egress: 'monitor' },
      },
    ],
    ipLists: [{ name: 'many', cidrs }],
    services: [],
    policies: [
      {
        name: 'server',
        scope: { matchLabels: { role: 'server' } },
        ingress: [
          {
            action: 'allow',
            peers: [{ ipList: 'many' }],
            services: [{ protocol: 'tcp', port: 5000 }],
          },
          {
            action: 'allow',
            peers: [{ selector: { matchLabels: { role: 'client' } } }],
            services: [{ protocol: 'tcp', port: 5000 }],
          },
        ],
      },
    ],
  };
  const calc = createCalculator();
  const out = calc.load(state);
  if (out.diagnostics.length) throw new Error(JSON.stringify(out.diagnostics));
  const ruleSet = calc.ruleSet('server')!;
  const ids = [...new Set(ruleSet.rules.flatMap((r) => r.groups))];
  return {
    baseHash: '',
    hash: 'bench',
    revision: 1,
    full: true,
    last: true,
    ruleSet,
    groups: ids.map((id) => ({
      id,
      created: true,
      deleted: false,
      added: calc.group(id)!.map(toAddressRange),
      removed: [],
    })),
  };
}

const lab = await createLab({ hosts: ['client', 'server'], ipv6: false });
try {
  const server = lab.hosts.server!.ipv4;
  await lab.listen('server', 'tcp', 5000);
  const loop = async () => {
    const r = await lab.exec(
      'client',
      [process.execPath, join(HERE, '..', 'connloop.mjs'), server, '5000', String(SECONDS), '8'],
      {
        check: true,
        timeoutMs: (SECONDS + 30) * 1000,
      },
    );
    const { connections, failures } = JSON.parse(r.stdout) as {
      connections: number;
      failures: number;
    };
    return { connPerSec: Math.round(connections / SECONDS), failures };
  };
  await loop(); // warm-up: ARP, page cache, JIT of the client
  const results: Record<string, unknown>[] = [{ firewall: 'none', ...(await loop()) }];
  for (const n of SIZES) {
    const update = updateFor(lab.hosts.client!.ipv4, server, n);
    const file = join(tmpdir(), `bulkhead-bench-${process.pid}-${n}.pb`);
    writeFileSync(file, PolicyUpdate.encode(update).finish());
    const applied = await lab.exec(
      'server',
      [process.execPath, join(HERE, 'apply-ruleset.js'), file],
      {
        check: true,
        timeoutMs: 120_000,
      },
    );
    const { applyMs, elements } = JSON.parse(applied.stdout) as {
      applyMs: number;
      elements: number;
    };
    results.push({
      firewall: 'bulkhead-enforce',
      setElements: elements,
      applyMs,
      ...(await loop()),
    });
  }
  console.log(JSON.stringify({ dataplane: { seconds: SECONDS, results } }));
} finally {
  await lab.destroy();
}
