// Worker thread of the telemetry bench: GETs /healthz back to back (one at a time, 50 ms
// apart) on its own event loop, so the latency it sees is the control plane's, not the load
// generator's. Posts the latencies (ms) when the parent posts 'stop'.
import { parentPort, workerData } from 'node:worker_threads';

const { url } = workerData as { url: string };
const latencies: number[] = [];
let running = true;
parentPort?.on('message', () => {
  running = false;
});
while (running) {
  const t0 = performance.now();
  try {
    const r = await fetch(url);
    await r.arrayBuffer();
    latencies.push(performance.now() - t0);
  } catch {
    latencies.push(Number.POSITIVE_INFINITY);
  }
  await new Promise((r) => setTimeout(r, 50));
}
parentPort?.postMessage(latencies);
