#!/usr/bin/env python3
"""One process of the lock tests (test/e2e/locks.test.ts): takes commands as JSON lines on
stdin, answers each with a JSON line on stdout, so that a test can run fcntl and flock
locks between several processes, each on a file of its own choosing (the same file through
the local disk, or through two dfs mounts).

Commands ({"cmd": ..., ...}):
  open {path, mode: r|w|rw} -> {fd}          close {fd} -> {}
  setlk / setlkw {fd, type: r|w|u, start, len, alarmMs?}   fcntl F_SETLK / F_SETLKW
  getlk {fd, type, start, len} -> {type, start, len, pid}
  flock {fd, op: sh|ex|un, nb: bool, alarmMs?}
  pwrite {fd, offset, data} -> {}          pread {fd, offset, len} -> {data}
  pid -> {pid}
Every answer is {"ok": true, ...} or {"ok": false, "errno": "EAGAIN"...}. alarmMs: a
SIGALRM after that long interrupts a blocking call (its handler raises, so Python does not
retry the call after EINTR, PEP 475), which answers EINTR.
"""
import errno
import fcntl
import json
import os
import signal
import struct
import sys

# struct flock on Linux (64-bit off_t): short type, short whence, off_t start, off_t len,
# pid_t pid, padded to 32 bytes.
FLOCK_FORMAT = 'hhqqi'
FLOCK_SIZE = 32
TYPES = {'r': fcntl.F_RDLCK, 'w': fcntl.F_WRLCK, 'u': fcntl.F_UNLCK}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
MODES = {'r': os.O_RDONLY, 'w': os.O_WRONLY, 'rw': os.O_RDWR}


class Interrupted(Exception):
    pass


def on_alarm(_signum, _frame):
    raise Interrupted()


signal.signal(signal.SIGALRM, on_alarm)


def pack(kind, start, length):
    raw = struct.pack(FLOCK_FORMAT, TYPES[kind], os.SEEK_SET, start, length, 0)
    return raw + b'\0' * (FLOCK_SIZE - len(raw))


def with_alarm(alarm_ms, fn):
    if alarm_ms:
        signal.setitimer(signal.ITIMER_REAL, alarm_ms / 1000.0)
    try:
        return fn()
    except Interrupted:
        return {'ok': False, 'errno': 'EINTR'}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def run(c):
    cmd = c['cmd']
    if cmd == 'pid':
        return {'ok': True, 'pid': os.getpid()}
    if cmd == 'open':
        return {'ok': True, 'fd': os.open(c['path'], MODES[c['mode']])}
    if cmd == 'pwrite':
        os.pwrite(c['fd'], c['data'].encode(), c['offset'])
        return {'ok': True}
    if cmd == 'pread':
        return {'ok': True, 'data': os.pread(c['fd'], c['len'], c['offset']).decode(errors='replace')}
    if cmd == 'close':
        os.close(c['fd'])
        return {'ok': True}
    if cmd in ('setlk', 'setlkw'):
        op = fcntl.F_SETLK if cmd == 'setlk' else fcntl.F_SETLKW

        def go():
            fcntl.fcntl(c['fd'], op, pack(c['type'], c['start'], c['len']))
            return {'ok': True}
        return with_alarm(c.get('alarmMs'), go)
    if cmd == 'getlk':
        raw = fcntl.fcntl(c['fd'], fcntl.F_GETLK, pack(c['type'], c['start'], c['len']))
        t, _whence, start, length, pid = struct.unpack(FLOCK_FORMAT, raw[:struct.calcsize(FLOCK_FORMAT)])
        if t == fcntl.F_UNLCK:
            return {'ok': True, 'type': 'u'}
        return {'ok': True, 'type': TYPE_NAMES[t], 'start': start, 'len': length, 'pid': pid}
    if cmd == 'flock':
        op = {'sh': fcntl.LOCK_SH, 'ex': fcntl.LOCK_EX, 'un': fcntl.LOCK_UN}[c['op']]
        if c.get('nb'):
            op |= fcntl.LOCK_NB

        def go():
            fcntl.flock(c['fd'], op)
            return {'ok': True}
        return with_alarm(c.get('alarmMs'), go)
    raise ValueError('unknown command %r' % cmd)


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        c = json.loads(line)
        try:
            answer = run(c)
        except OSError as e:
            answer = {'ok': False, 'errno': errno.errorcode.get(e.errno, str(e.errno))}
        sys.stdout.write(json.dumps(answer) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
