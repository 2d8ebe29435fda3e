/*
 * HTTP/2 cleartext clients for talking to storage nodes. undici 7 speaks HTTP/2 without TLS
 * given `useH2c` (prior knowledge); its type definitions do not list the option yet, so it
 * is added here in one place.
 *
 * Many requests in flight on the one connection (DESIGN.md, Transport: the primary can
 * group-commit only if ops reach it side by side). undici's Client runs one request at a
 * time unless told otherwise, even over HTTP/2: `pipelining` defaults to 1, and it holds
 * back a request that is not idempotent (any POST) while another runs. So these clients
 * pipeline up to H2_STREAMS_MAX streams, and a caller whose POST is safe to send twice
 * says so with `idempotent: true` (H2_PARALLEL). Every POST to a node is: an op carries
 * its sequence ID and request ID (a slot is written once, a request ID applied once), a
 * replication batch is refused or skipped where the log already holds it.
 */
import { Client } from 'undici';

/** Streams in flight per connection to a node (undici's default for an HTTP/2 server's
 * MAX_CONCURRENT_STREAMS is 100; a node's server allows more). */
export const H2_STREAMS_MAX = 100;

/** Request options that let a POST run beside others on one connection (see above). */
export const H2_PARALLEL = { idempotent: true } as const;

export function h2cClientOptions(opts: Client.Options): Client.Options {
  return { pipelining: H2_STREAMS_MAX, ...opts, allowH2: true, useH2c: true } as Client.Options;
}
