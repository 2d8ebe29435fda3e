/* Partition scenarios, group B: cut from Redis, and a majority/minority split (test/helpers/partition-scenarios.ts). */
import { runPartitionSuite } from '../helpers/partition-scenarios';

runPartitionSuite('partitions b', ['primary cut from Redis only', 'majority/minority split', 'leader proxy cut from Redis']);
