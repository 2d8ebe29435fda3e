/*
 * HTTP/2 clients for talking to storage nodes: over TLS with the cluster's certificates
 * (ALPN h2; common/tls.ts), or, under --insecure, cleartext. undici 7 speaks HTTP/2 without
 * TLS given `useH2c` (prior knowledge); its type definitions do not list the option yet, so
 * it is added here in one place.
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
import { clientConnectOptions, type TlsMaterial } from './tls';

/** Streams in flight per connection to a node (undici's default for an HTTP/2 server's
 * MAX_CONCURRENT_STREAMS is 100; a node's server allows more). */
export const H2_STREAMS_MAX = 100;

/** Request options that let a POST run beside others on one connection (see above). */
export const H2_PARALLEL = { idempotent: true } as const;

/** The flow-control windows a client offers: a stream may carry a 4 MiB read answer (the
 * mount reads ahead several 1 MiB windows at once) without stopping for a WINDOW_UPDATE.
 * undici's own defaults (256 KiB a stream, 512 KiB the connection) held each answer to a
 * round trip per 256 KiB, and several answers in flight to one window between them. */
export const H2_CLIENT_STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
export const H2_CLIENT_CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024;

/** What every HTTP/2 client of a node starts from: many streams, wide windows, `opts` on top. */
function h2Options(opts: Client.Options): Client.Options {
  return {
    pipelining: H2_STREAMS_MAX,
    initialWindowSize: H2_CLIENT_STREAM_WINDOW_BYTES,
    connectionWindowSize: H2_CLIENT_CONNECTION_WINDOW_BYTES,
    ...opts,
    allowH2: true,
  } as Client.Options;
}

export function h2cClientOptions(opts: Client.Options): Client.Options {
  return { ...h2Options(opts), useH2c: true } as Client.Options;
}

/** HTTP/2 to a storage node: over TLS when `tls` is given (the server must hold a node
 * certificate), else cleartext (--insecure). One connection, many streams, its TLS session
 * cached by undici: no handshake per request. */
export function h2ClientOptions(opts: Client.Options, tls: TlsMaterial | null | undefined, nodeId?: string): Client.Options {
  if (!tls) return h2cClientOptions(opts);
  return {
    ...h2Options(opts),
    connect: { ...clientConnectOptions(tls, ['node'], nodeId), ...(opts.connectTimeout ? { timeout: opts.connectTimeout as number } : {}) },
  } as Client.Options;
}
