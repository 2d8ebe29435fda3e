/* Partition scenarios, group C: a mount cut from a proxy, a bridge, flapping links (test/helpers/partition-scenarios.ts). */
import { runPartitionSuite } from '../helpers/partition-scenarios';

runPartitionSuite('partitions c', ['mount cut from one proxy', 'bridge', 'flapping links']);
