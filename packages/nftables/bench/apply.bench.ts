// Per-apply latency of libnftables (in-process) vs the nft binary, and how long a large
// batch stalls the event loop. Not run by tests. Needs root and a throwaway namespace:
//   npx tsc --build packages/nftables && npx tsc -p packages/nftables/bench &&
//   unshare --net -- node packages/nftables/bench/dist/apply.bench.js
// Prints one JSON object.
import type { NftDriver } from '@bulkhead/nftables';
import { createExecNft, createLibNft, Transaction } from '@bulkhead/nftables';

const T = { family: 'inet', table: 'bhbench' };
const SMALL_RUNS = Number(process.env.SMALL_RUNS ?? 200);
const BIG_ELEMENTS = Number(process.env.BIG_ELEMENTS ?? 20000);

function replaceTable(): Transaction {
  return new Transaction()
    .add({ table: { family: 'inet', name: 'bhbench' } })
    .delete({ table: { family: 'inet', name: 'bhbench' } })
    .add({ table: { family: 'inet', name: 'bhbench' } });
}

function small(i: number): Transaction {
  return replaceTable()
    .add({
      chain: { ...T, name: 'input', type: 'filter', hook: 'input', prio: 0, policy: 'accept' },
    })
    .add({ counter: { ...T, name: `c${i % 7}` } })
    .add({ rule: { ...T, chain: 'input', expr: [{ counter: `c${i % 7}` }, { accept: null }] } });
}

function big(n: number): Transaction {
  const elem: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const addr = `10.${(i >> 8) & 255}.${i & 255}.0`;
    elem.push([
      {
        concat: [
          { prefix: { addr, len: 24 } },
          6,
          { range: [1000 + (i % 50) * 10, 1005 + (i % 50) * 10] },
        ],
      },
      { jump: { target: 'r1' } },
    ]);
  }
  return replaceTable()
    .add({ chain: { ...T, name: 'r1' } })
    .add({
      map: {
        ...T,
        name: 'ports',
        type: ['ipv4_addr', 'inet_proto', 'inet_service'],
        map: 'verdict',
        flags: ['interval'],
      },
    })
    .add({ element: { ...T, name: 'ports', elem } });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

async function measure(nft: NftDriver): Promise<Record<string, unknown>> {
  const times: number[] = [];
  for (let i = 0; i < SMALL_RUNS; i++) {
    const tx = small(i);
    const t0 = performance.now();
    await nft.apply(tx);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);

  // Longest gap between 1 ms ticks while the big batch loads = how long the loop was blocked.
  const tx = big(BIG_ELEMENTS);
  let lastTick = performance.now();
  let maxGap = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - lastTick);
    lastTick = now;
  }, 1);
  const t0 = performance.now();
  await nft.apply(tx);
  const bigMs = performance.now() - t0;
  clearInterval(ticker);
  maxGap = Math.max(maxGap, performance.now() - lastTick);

  await nft.apply(new Transaction().delete({ table: { family: 'inet', name: 'bhbench' } }));
  return {
    backend: nft.backend,
    smallApplyMs: {
      runs: SMALL_RUNS,
      p50: percentile(times, 50),
      p95: percentile(times, 95),
      max: times.at(-1),
    },
    bigApply: { elements: BIG_ELEMENTS, ms: bigMs, maxEventLoopGapMs: maxGap },
  };
}

const results = [];
for (const make of [createLibNft, createExecNft]) {
  const nft = make();
  try {
    results.push(await measure(nft));
  } finally {
    nft.close();
  }
}
console.log(JSON.stringify({ bench: 'nftables-apply', node: process.version, results }, null, 2));
