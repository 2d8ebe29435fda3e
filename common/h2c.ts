/*
 * HTTP/2 cleartext clients for talking to storage nodes. undici 7 speaks HTTP/2 without TLS
 * given `useH2c` (prior knowledge); its type definitions do not list the option yet, so it
 * is added here in one place.
 *
 * undici's Client runs one request at a time unless `pipelining` says otherwise, HTTP/2
 * included, and sends a non-idempotent request (a POST) only on an idle connection: so
 * streams are allowed here, and callers mark their POSTs idempotent where a repeat is
 * harmless (an op carries its request ID: docs/api.md). Without that, a lease poll held by
 * a primary would hold every other request to it.
 */
import { Client } from 'undici';

/** Requests in flight on one connection to a node (HTTP/2 streams). */
export const H2_STREAMS_MAX = 128;

export function h2cClientOptions(opts: Client.Options): Client.Options {
  return { pipelining: H2_STREAMS_MAX, ...opts, allowH2: true, useH2c: true } as Client.Options;
}
