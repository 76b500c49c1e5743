import { defineConfig } from 'vitest/config';

// Three suites: unit (pure, fast, fake nft driver), integration (real nftables, run by
// scripts/test.sh inside a throwaway network namespace via `unshare --net`), and e2e
// (several namespace hosts, a real control plane, real agent processes); deploy checks deploy/
// with the operators' own tools (systemd-analyze, promtool, the installer in a namespace).
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['packages/*/src/**/*.test.ts'] } },
      {
        test: {
          name: 'integration',
          include: ['packages/*/src/**/*.itest.ts'],
          fileParallelism: false,
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/**/*.e2e.ts'],
          // Two files at a time: each builds its own lab (namespaces named by the worker's pid,
          // data dirs from mkdtemp, ports inside its namespaces), so files never share a thing.
          // Most of an e2e file is waiting (agents syncing, timeouts of refused connections).
          maxWorkers: 2,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
      {
        test: {
          name: 'deploy',
          include: ['test/deploy/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
