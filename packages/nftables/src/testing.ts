// Test doubles for code that drives nftables: `import { createFakeNft } from '@bulkhead/nftables/testing'`.
export type { FakeNft } from './fake.js';
export { createFakeNft } from './fake.js';
