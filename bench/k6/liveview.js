// LiveView sessions against djust's WebSocket protocol (or the echo baseline).
//
// Every session (one k6 VU) connects at its slot of a linear ramp, mounts the
// view, waits until every session is mounted, then sends EVENTS events:
//   MODE=open    one every PERIOD_MS at a fixed schedule with a random phase,
//                whether or not earlier events were answered (open loop: what
//                real users do; a slow server shows up as latency, not as a
//                lower offered rate);
//   MODE=closed  the next one as soon as the previous patch arrives (capacity).
// Each event's round trip is the time from its send to the frame carrying its
// `ref`. Everything is bounded: EVENTS per session, DRAIN_MS after the last
// send, HARD_MS per session, and the scenario's maxDuration.
//
// k6's clock (Date.now) has 1 ms resolution: round trips are whole ms.
//
//   k6 run --quiet --no-usage-report -e WS_URL=ws://127.0.0.1:8080/ws/live/ \
//     -e ORIGIN=http://localhost -e VIEW=core.views.CounterView -e SESSIONS=100 liveview.js

import { sleep } from "k6";
import exec from "k6/execution";
import { Counter, Trend } from "k6/metrics";
import ws from "k6/ws";

const env = (name, fallback) => (__ENV[name] === undefined || __ENV[name] === "" ? fallback : __ENV[name]);

const WS_URL = env("WS_URL", "ws://127.0.0.1:8080/ws/live/");
const ORIGIN = env("ORIGIN", "http://localhost");
const HOST = env("HOST_HEADER", "");
const VIEW = env("VIEW", "core.views.CounterView");
const EVENT = env("EVENT", "increment");
const SESSIONS = parseInt(env("SESSIONS", "10"), 10);
const EVENTS = parseInt(env("EVENTS", "10"), 10);
const PERIOD_MS = parseFloat(env("PERIOD_MS", "1000"));
const RAMP_MS = parseFloat(env("RAMP_MS", "2000"));
const SETTLE_MS = parseFloat(env("SETTLE_MS", "2000"));
const DRAIN_MS = parseFloat(env("DRAIN_MS", "5000"));
const LATE_MS = parseFloat(env("LATE_MS", "100"));
const MODE = env("MODE", "open");
const COMPRESSION = env("COMPRESSION", "");
const OUT = env("OUT", "k6-summary.json");
// Closed loop only: stop sending after this long (EVENTS still caps the count).
const DURATION_MS = parseFloat(env("DURATION_MS", String(EVENTS * PERIOD_MS)));

// Longest a session may live: ramp + settle + its events + drain, plus slack.
const HARD_MS =
  RAMP_MS + SETTLE_MS + (MODE === "closed" ? DURATION_MS : EVENTS * PERIOD_MS) + DRAIN_MS + 15000;

export const options = {
  scenarios: {
    sessions: {
      executor: "per-vu-iterations",
      vus: SESSIONS,
      iterations: 1,
      maxDuration: `${Math.ceil(HARD_MS / 1000) + 30}s`,
      gracefulStop: "5s",
    },
  },
  summaryTrendStats: ["avg", "min", "med", "p(90)", "p(95)", "p(99)", "p(99.9)", "max", "count"],
  insecureSkipTLSVerify: true,
  // No thresholds: the benchmark reports, it does not judge.
};

const eventRtt = new Trend("event_rtt", true);
const mountTime = new Trend("mount_time", true);
const eventsSent = new Counter("events_sent");
const eventsAnswered = new Counter("events_answered");
const eventsPatched = new Counter("events_patched");
const eventsLate = new Counter("events_late");
const eventsUnanswered = new Counter("events_unanswered");
const sessionsMounted = new Counter("sessions_mounted");
const sessionsFailed = new Counter("sessions_failed");
const errorFrames = new Counter("error_frames");
const wsErrors = new Counter("ws_errors");
const closedEarly = new Counter("sessions_closed_by_server");
const rateLimited = new Counter("events_rate_limited");

export default function () {
  const start = exec.scenario.startTime;
  const slot = exec.vu.idInTest - 1;
  const connectAt = start + (slot * RAMP_MS) / Math.max(SESSIONS, 1);
  const eventsAt = start + RAMP_MS + SETTLE_MS;
  const wait = connectAt - Date.now();
  if (wait > 0) {
    sleep(wait / 1000); // seconds
  }

  const headers = { Origin: ORIGIN };
  if (HOST) headers.Host = HOST;
  const params = { headers };
  if (COMPRESSION) params.compression = COMPRESSION;

  let mounted = false;
  let finished = false;
  let sentCount = 0;
  let closing = false;
  const pending = {};
  let pendingCount = 0;

  const res = ws.connect(WS_URL, params, (socket) => {
    let mountSentAt = 0;
    let firstAt = 0;

    const close = () => {
      if (closing) return;
      closing = true;
      socket.close();
    };

    const sendEvent = () => {
      const ref = sentCount + 1;
      pending[ref] = Date.now();
      pendingCount += 1;
      sentCount += 1;
      socket.send(JSON.stringify({ type: "event", event: EVENT, params: {}, ref }));
      eventsSent.add(1);
    };

    const openLoop = (k) => {
      if (closing) return;
      if (k >= EVENTS) {
        finished = true;
        if (pendingCount === 0) close();
        else socket.setTimeout(close, DRAIN_MS);
        return;
      }
      sendEvent();
      const due = firstAt + (k + 1) * PERIOD_MS;
      socket.setTimeout(() => openLoop(k + 1), Math.max(0, due - Date.now()));
    };

    const closedLoopNext = () => {
      if (closing) return;
      if (sentCount >= EVENTS || Date.now() > firstAt + DURATION_MS) {
        finished = true;
        close();
        return;
      }
      sendEvent();
    };

    socket.on("message", (data) => {
      const now = Date.now();
      let msg;
      try {
        msg = JSON.parse(data);
      } catch (e) {
        errorFrames.add(1);
        return;
      }
      if (msg.type === "connect") {
        mountSentAt = now;
        socket.send(
          JSON.stringify({
            type: "mount",
            view: VIEW,
            params: {},
            url: "/",
            has_prerendered: true,
            client_timezone: "UTC",
          }),
        );
        return;
      }
      if (msg.type === "mount" && !mounted) {
        mounted = true;
        mountTime.add(now - mountSentAt);
        sessionsMounted.add(1);
        if (MODE === "closed") {
          firstAt = Math.max(now, eventsAt);
          socket.setTimeout(closedLoopNext, Math.max(0, eventsAt - now));
        } else {
          firstAt = Math.max(now, eventsAt) + Math.random() * PERIOD_MS;
          socket.setTimeout(() => openLoop(0), Math.max(0, firstAt - now));
        }
        return;
      }
      if (msg.type === "error") errorFrames.add(1);
      if (msg.type === "rate_limit_exceeded") {
        // djust's per-connection token bucket (100/s, burst 20) dropped an
        // event; only a closed loop of few sessions gets here. The frame has
        // no ref: forget the oldest pending event and carry on.
        rateLimited.add(1);
        const refs = Object.keys(pending);
        if (refs.length > 0) {
          delete pending[refs[0]];
          pendingCount -= 1;
        }
        if (MODE === "closed") socket.setTimeout(closedLoopNext, 50);
        return;
      }
      const ref = msg.ref;
      if (ref !== undefined && ref !== null && pending[ref] !== undefined) {
        const rtt = now - pending[ref];
        delete pending[ref];
        pendingCount -= 1;
        eventRtt.add(rtt);
        eventsAnswered.add(1);
        if (msg.type === "patch") eventsPatched.add(1);
        if (rtt > LATE_MS) eventsLate.add(1);
        if (MODE === "closed") closedLoopNext();
        else if (finished && pendingCount === 0) close();
      }
    });

    socket.on("error", () => wsErrors.add(1));
    socket.on("close", () => {
      if (!closing) closedEarly.add(1);
    });
    socket.setTimeout(close, HARD_MS - (Date.now() - start));
  });

  if (!res || res.status !== 101 || !mounted) sessionsFailed.add(1);
  if (pendingCount > 0) eventsUnanswered.add(pendingCount);
}

export function handleSummary(data) {
  const out = {};
  out[OUT] = JSON.stringify(
    {
      options: { SESSIONS, EVENTS, DURATION_MS, PERIOD_MS, RAMP_MS, SETTLE_MS, DRAIN_MS, LATE_MS, MODE, COMPRESSION, VIEW },
      state: data.state,
      metrics: data.metrics,
    },
    null,
    1,
  );
  return out;
}
