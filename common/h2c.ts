/*
 * HTTP/2 cleartext clients for talking to storage nodes. undici 7 speaks HTTP/2 without TLS
 * given `useH2c` (prior knowledge); its type definitions do not list the option yet, so it
 * is added here in one place.
 */
import { Client } from 'undici';

export function h2cClientOptions(opts: Client.Options): Client.Options {
  return { ...opts, allowH2: true, useH2c: true } as Client.Options;
}
