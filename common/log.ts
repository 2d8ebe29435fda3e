/*
 * The structured logger every driver gets injected (STYLE.md, Logs). JSON lines on stderr,
 * level from DFS_LOG_LEVEL (default info); the pure core never logs.
 */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(name: string, fields: Record<string, unknown> = {}): Logger {
  return pino({ name, level: process.env.DFS_LOG_LEVEL ?? 'info', base: { pid: process.pid, ...fields } }, pino.destination(2));
}
