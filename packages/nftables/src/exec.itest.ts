import { describeNftContract } from './contract.js';
import { createExecNft } from './exec.js';

// Real kernel: run inside `unshare --net` (scripts/test.sh does).
describeNftContract('nft binary', async () => createExecNft());
