/* Partition scenarios, group A: the primary cut from its backups, and a backup from the primary (test/helpers/partition-scenarios.ts). */
import { runPartitionSuite } from '../helpers/partition-scenarios';

runPartitionSuite('partitions a', ['primary cut from both backups', 'primary cut from both backups, then its disk lost', 'a backup cut from the primary only']);
