// Worker thread of the fleet bench: polls the control plane's /healthz every 20 ms on its own
// event loop until it answers, then posts when (`performance.timeOrigin`-based ms, comparable
// across threads) and the control plane's CPU at that moment. The bench's main thread drives a
// whole simulated fleet reconnecting: a poll there saw the control plane healthy seconds late.
import { parentPort, workerData } from 'node:worker_threads';
import { cpuMsOf } from './fleet-control-plane.js';

const { url, pid } = workerData as { url: string; pid: number };
for (;;) {
  const up = await fetch(url).then(
    (r) => r.ok,
    () => false,
  );
  if (up) break;
  await new Promise((r) => setTimeout(r, 20));
}
parentPort?.postMessage({ at: performance.timeOrigin + performance.now(), cpuMs: cpuMsOf(pid) });
