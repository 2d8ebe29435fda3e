#!/usr/bin/env python3
"""One SQLite writer of the lock tests (test/e2e/locks-sqlite.test.ts).

  sqlite-writer.py DB WRITER COUNT BUSY_MS        COUNT single-row transactions
  sqlite-writer.py DB --create JOURNAL_MODE       makes the table
  sqlite-writer.py DB --check                     rows, per-writer order, integrity_check

Prints one JSON line. Each transaction is BEGIN IMMEDIATE, one INSERT, COMMIT, with the
busy timeout given; an error is counted and reported, never retried by hand, so that what
is measured is what SQLite itself makes of the file system's locks.
"""
import json
import sqlite3
import sys


def connect(path, busy_ms):
    db = sqlite3.connect(path, timeout=busy_ms / 1000.0, isolation_level=None)
    return db


def main():
    path = sys.argv[1]
    if sys.argv[2] == '--create':
        db = connect(path, 10000)
        mode = db.execute('PRAGMA journal_mode=%s' % sys.argv[3]).fetchone()[0]
        db.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, writer TEXT NOT NULL, n INTEGER NOT NULL)')
        db.close()
        print(json.dumps({'journal_mode': mode}))
        return
    if sys.argv[2] == '--check':
        db = connect(path, 10000)
        rows = db.execute('SELECT writer, n FROM t ORDER BY id').fetchall()
        integrity = db.execute('PRAGMA integrity_check').fetchone()[0]
        by_writer = {}
        for w, n in rows:
            by_writer.setdefault(w, []).append(n)
        in_order = all(ns == list(range(len(ns))) for ns in by_writer.values())
        print(json.dumps({'rows': len(rows), 'integrity': integrity, 'writers': {w: len(ns) for w, ns in by_writer.items()}, 'inOrder': in_order}))
        db.close()
        return
    writer, count, busy_ms = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    db = connect(path, busy_ms)
    inserted = 0
    errors = []
    for i in range(count):
        try:
            db.execute('BEGIN IMMEDIATE')
            db.execute('INSERT INTO t (writer, n) VALUES (?, ?)', (writer, inserted))
            db.execute('COMMIT')
            inserted += 1
        except sqlite3.Error as e:
            errors.append('%d: %s' % (i, e))
            try:
                db.execute('ROLLBACK')
            except sqlite3.Error:
                pass
    db.close()
    print(json.dumps({'writer': writer, 'inserted': inserted, 'errors': len(errors), 'firstErrors': errors[:5]}))


if __name__ == '__main__':
    main()
