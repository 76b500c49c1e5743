import { describeNftContract } from './contract.js';
import { createLibNft } from './libnft.js';

// Real kernel: run inside `unshare --net` (scripts/test.sh does).
describeNftContract('libnftables', async () => createLibNft());
