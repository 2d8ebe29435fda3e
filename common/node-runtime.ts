/*
 * The V8 flags every long-running dfs process (storage node, proxy, mount) is started with.
 *
 * Why: every MiB a dfs process moves lives for a moment in Buffers outside V8's heap, and V8
 * counts that external memory towards the limit at which it starts a full mark-compact.
 * With the default initial old-generation size (a few MiB on a 15 MiB heap) the limit is
 * reached every few MiB of traffic: measured on a 128 MiB sequential write through a local
 * cluster, the proxy ran 32 mark-compacts and the primary 17, and V8's marking and sweeping
 * threads took about 40% of all the CPU the cluster spent on the write. Starting with a
 * larger initial old generation lets the young generation's scavenges free those Buffers
 * first: 5 and 4 mark-compacts for the same write, and 14% less CPU per MiB written, 28%
 * less per MiB read (README, Performance). The price is memory: a process may hold up to
 * this much garbage before its first full collection.
 *
 * Node refuses heap-size flags in NODE_OPTIONS, so they go on the command line of every
 * process dfs starts (cli/), in bin/dfs-mount's interpreter line, and in the chart's pod
 * commands.
 */

/** MiB of old generation a process starts with. */
export const NODE_INITIAL_OLD_SPACE_MIB = 128;

export const NODE_RUNTIME_FLAGS: readonly string[] = [`--initial-old-space-size=${NODE_INITIAL_OLD_SPACE_MIB}`];
