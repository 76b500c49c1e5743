import { defineConfig } from 'vitest/config';

// Three suites: unit (pure, fast, fake nft driver), integration (real nftables, run by
// scripts/test.sh inside a throwaway network namespace via `unshare --net`), and e2e
// (several namespace hosts, a real control plane, real agent processes); deploy checks deploy/
// with the operators' own tools (systemd-analyze, promtool, the installer in a namespace).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts'],
          // One module graph per worker, not per file: importing it again for each of the ~85
          // files cost more CPU than the tests (packages/cli: 26.6 s CPU isolated, 9.4 s not).
          // Safe because no test mocks modules or changes globals (vi.spyOn on local objects).
          isolate: false,
          // A bound on a hung test, not a speed check: vitest's 5 s default fails heavy tests
          // (150k-range encodes, real agent processes) on a loaded 2-core machine, and the suite
          // shares the machine with the e2e lane (scripts/test.sh).
          testTimeout: 30_000,
          hookTimeout: 30_000,
        },
      },
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
