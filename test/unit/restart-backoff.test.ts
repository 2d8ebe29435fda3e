/*
 * The supervisor's crash-loop backoff (cli/restart-backoff.ts) as event scripts: each line
 * is an event at a time, and what the step must answer.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  DEFAULT_BACKOFF_POLICY,
  initialRestartState,
  stepRestart,
  validateBackoffPolicy,
  type BackoffPolicy,
  type RestartEvent,
} from '../../cli/restart-backoff';

const policy: BackoffPolicy = { backoffMsMin: 200, backoffMsMax: 1_000, resetAfterMs: 5_000 };

type Line = [RestartEvent['type'], number, { restart: boolean; restartInMs?: number }];

/** Runs a script from a process first seen running at time 0; checks every answer. */
function run(script: Line[]): void {
  let state = initialRestartState(0, policy);
  script.forEach(([type, nowMs, want], index) => {
    const step = stepRestart(state, { type, nowMs } as RestartEvent, policy);
    const where = `line ${index + 1} (${type} at ${nowMs})`;
    assert.is(step.restart, want.restart, `${where}: restart`);
    assert.is(step.died?.restartInMs, want.restartInMs, `${where}: restartInMs`);
    state = step.state;
  });
}

test('a process that dies at once, again and again, waits twice as long each time, up to the bound', () => {
  run([
    ['seen-alive', 100, { restart: false }],
    ['seen-dead', 200, { restart: false, restartInMs: 200 }],
    ['seen-dead', 399, { restart: false }],
    ['seen-dead', 400, { restart: true }],
    ['restarted', 400, { restart: false }],
    ['seen-dead', 500, { restart: false, restartInMs: 400 }],
    ['seen-dead', 900, { restart: true }],
    ['restarted', 900, { restart: false }],
    ['seen-dead', 1_000, { restart: false, restartInMs: 800 }],
    ['seen-dead', 1_800, { restart: true }],
    ['restarted', 1_800, { restart: false }],
    ['seen-dead', 1_900, { restart: false, restartInMs: 1_000 }],
    ['seen-dead', 2_900, { restart: true }],
    ['restarted', 2_900, { restart: false }],
    ['seen-dead', 3_000, { restart: false, restartInMs: 1_000 }],
  ]);
});

test('a process that stayed up past the reset time starts again from the shortest wait', () => {
  run([
    ['seen-dead', 0, { restart: false, restartInMs: 200 }],
    ['seen-dead', 200, { restart: true }],
    ['restarted', 200, { restart: false }],
    ['seen-dead', 300, { restart: false, restartInMs: 400 }],
    ['seen-dead', 700, { restart: true }],
    ['restarted', 700, { restart: false }],
    ['seen-alive', 5_000, { restart: false }],
    ['seen-dead', 5_700, { restart: false, restartInMs: 200 }],
    ['seen-dead', 5_900, { restart: true }],
  ]);
});

test('one that comes back without the supervisor is a new incarnation, and is not restarted', () => {
  run([
    ['seen-dead', 100, { restart: false, restartInMs: 200 }],
    ['seen-alive', 200, { restart: false }],
    ['seen-alive', 250, { restart: false }],
    // It ran 100 ms since it came back: no reset, and no restart had happened, so the wait stays.
    ['seen-dead', 300, { restart: false, restartInMs: 200 }],
  ]);
});

test('the default policy is valid, and a policy whose limits contradict each other is refused', () => {
  validateBackoffPolicy(DEFAULT_BACKOFF_POLICY);
  const bad: BackoffPolicy[] = [
    { backoffMsMin: 0, backoffMsMax: 1_000, resetAfterMs: 5_000 },
    { backoffMsMin: 1.5, backoffMsMax: 1_000, resetAfterMs: 5_000 },
    { backoffMsMin: 2_000, backoffMsMax: 1_000, resetAfterMs: 5_000 },
    { backoffMsMin: 200, backoffMsMax: 1_000, resetAfterMs: 999 },
  ];
  for (const policy of bad) assert.throws(() => validateBackoffPolicy(policy), undefined, JSON.stringify(policy));
});

test.run();
