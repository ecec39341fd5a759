// graphile-worker side by side with agent-meter's worker (see README.md):
//
//   node run.mjs [--jobs 20000] [--concurrency 32] [--rounds 3] [--only noop|metered]
//                [--configs default,pool,localQueue,batched,batchedLarge] [--local-queue N]
//                [--large-queue N] [--batch-delay MS] [--no-http | --http-client fetch|http]
//                [--wait-quiet]
//
// Scratch database on BENCH_DATABASE_URL (admin URL), created per run, migrated with our
// migrations/*.up.sql and seeds/*.sql, dropped at the end. Per round, per kind, per
// configuration (order rotated each round): N jobs are enqueued in bulk (not timed), then the
// clock runs from worker start until graphile's jobs table is empty.

import { readFileSync, readdirSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import { EventEmitter } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";

// graphile-worker logs a line per successful job unless this is set (its own perf test sets it).
process.env.NO_LOG_SUCCESS ??= "1";
const { run, runMigrations, makeWorkerUtils, Logger } = await import("graphile-worker");
const gwVersion = JSON.parse(
  readFileSync(new URL("node_modules/graphile-worker/package.json", import.meta.url)),
).version;

const argv = process.argv.slice(2);
const arg = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
const JOBS = Number(arg("--jobs", 20000));
const CONCURRENCY = Number(arg("--concurrency", 32));
const ROUNDS = Number(arg("--rounds", 3));
const KINDS = arg("--only", null) ? [arg("--only")] : ["noop", "metered"];
if (!KINDS.every((k) => k === "noop" || k === "metered")) throw new Error("--only noop|metered");
// Before each run wait (<= 10 min) for the machine to be < 10% busy; repeat (<= 3 attempts) a run
// during which other processes used > 10% of it.
const WAIT_QUIET = argv.includes("--wait-quiet");
const HTTP = !argv.includes("--no-http"); // --http (the default): call the ArcGIS stand-in
// ... with fetch() (undici), or with node:http and a keep-alive agent (a third of fetch's CPU).
const HTTP_CLIENT = arg("--http-client", "fetch");
if (!["fetch", "http"].includes(HTTP_CLIENT)) throw new Error("--http-client fetch|http");
const LOCAL_QUEUE = Number(arg("--local-queue", CONCURRENCY + 1)); // graphile's suggested start
const LARGE_QUEUE = Number(arg("--large-queue", CONCURRENCY * 10));
const BATCH_DELAY = Number(arg("--batch-delay", 0)); // completeJobBatchDelay, failJobBatchDelay
const POOL = CONCURRENCY + 8; // our calls bench's pool: concurrency + 8
const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REPO = new URL("../../", import.meta.url).pathname;
const ENQUEUE_BATCH = 1000;
const BILLING_TIMEZONE = "America/Phoenix"; // our Config's default

// The configurations, each on top of `concurrency` (names as in graphile 0.18's WorkerOptions).
const batched = (size) => ({
  maxPoolSize: POOL,
  preset: {
    worker: { localQueue: { size }, completeJobBatchDelay: BATCH_DELAY, failJobBatchDelay: BATCH_DELAY },
  },
});
const CONFIGS = {
  // `concurrency` only: graphile's own pool is node-postgres's default of 10 connections.
  default: {},
  // Graphile's pool advice ("concurrentJobs + 2 or more"; tasks use it too): ours, conc + 8.
  pool: { maxPoolSize: POOL },
  // Batched fetch: the pool locks `size` jobs per query and hands them out to its workers.
  localQueue: { maxPoolSize: POOL, preset: { worker: { localQueue: { size: LOCAL_QUEUE } } } },
  // Batched fetch and batched completion (0 ms: completions before the next timer tick go as one).
  batched: batched(LOCAL_QUEUE),
  // The same with a local queue ten times the concurrency.
  batchedLarge: batched(LARGE_QUEUE),
};
const CONFIG_NAMES = arg("--configs", Object.keys(CONFIGS).join(",")).split(",");
for (const c of CONFIG_NAMES) if (!CONFIGS[c]) throw new Error(`unknown configuration ${c}`);

// Warnings and errors only.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`  [graphile ${level}] ${message}`);
});

/** CPU seconds used by the whole machine so far (all but idle and iowait, as our benches). */
function machineSeconds() {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  return (f.reduce((a, b) => a + b, 0) - f[3] - f[4]) / 100;
}

/**
 * CPU seconds of every other process: all of /proc but this one and the backends of our scratch
 * database (PostgreSQL's shared background processes count as others). With cutime/cstime, so
 * children that exit in between (rustc under cargo, other tests' backends) are counted too.
 */
function othersSeconds(dbName) {
  let ticks = 0;
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dbName)) continue;
      const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {} // gone meanwhile
  }
  return ticks / 100;
}

/** Share of all cores busy over one second (anyone's work: call it while we are idle). */
async function busyShare() {
  const t0 = machineSeconds();
  await sleep(1000);
  return (machineSeconds() - t0) / os.cpus().length;
}
const pct = (share) => `${(share * 100).toFixed(0)}%`;
const busy = async () => `machine ${pct(await busyShare())} busy over 1 s, load ` +
  `${os.loadavg().map((l) => l.toFixed(2)).join(" ")} at ${new Date().toISOString()}`;

/** Our ArcGIS stand-in's answer (benches/calls.rs `arcgis_stub`): two wells near Flagstaff. */
const WELLS = (() => {
  const well = (id, lat, lon) => ({
    attributes: { REGISTRY_ID: id, OWNER_NAME: "SMITH", WELL_DEPTH: 420, WATER_LEVEL: 260,
      WATER_USE: "DOMESTIC", INSTALLED: 946684800000, WELL_CANCELLED: "N" },
    geometry: { x: lon, y: lat },
  });
  return JSON.stringify({
    features: [well(55512001, 35.1984, -111.6512), well(55512002, 35.2001, -111.649)],
    exceededTransferLimit: false,
  });
})();

async function standIn() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(WELLS) });
    res.end(WELLS);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { server, layer: `http://127.0.0.1:${server.address().port}/layer/0` };
}

async function getWithFetch(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`stand-in answered ${res.status}`);
  return res.json();
}

const agent = new http.Agent({ keepAlive: true });
function getWithHttp(url) {
  return new Promise((ok, fail) => {
    http.get(url, { agent }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (c) => (body += c)).on("end", () => {
        if (res.statusCode !== 200) fail(new Error(`stand-in answered ${res.statusCode}`));
        else ok(JSON.parse(body));
      });
    }).on("error", fail);
  });
}

/** Great-circle distance in metres (as wells::haversine_m). */
function haversineM(lat1, lon1, lat2, lon2) {
  const r = (d) => (d * Math.PI) / 180;
  const a = Math.sin(r(lat2 - lat1) / 2) ** 2 +
    Math.cos(r(lat1)) * Math.cos(r(lat2)) * Math.sin(r(lon2 - lon1) / 2) ** 2;
  return 2 * 6371008.8 * Math.asin(Math.sqrt(a));
}

/** wells::summarize on an ArcGIS answer. */
function summarize(answer, lat, lon) {
  const wells = answer.features.filter((f) => f.attributes.WELL_CANCELLED !== "Y");
  let nearest = null;
  for (const w of wells) {
    const d = haversineM(lat, lon, w.geometry.y, w.geometry.x);
    if (!nearest || d < nearest.distance_m) {
      const a = w.attributes;
      nearest = { registry_id: String(a.REGISTRY_ID), distance_m: Math.round(d * 10) / 10,
        well_depth_ft: a.WELL_DEPTH, water_level_ft: a.WATER_LEVEL, water_use: a.WATER_USE };
    }
  }
  return { well_count: wells.length, nearest };
}

// One water_lookup effect in one statement: src/jobs/writer.rs WRITE_EFFECTS for a single effect
// (property upserted with its facts, finding kept if already saved, usage row at the price in
// force on the finding's day, all keyed, ON CONFLICT DO NOTHING). No tags: water_lookup has none.
const WRITE_EFFECT = `
WITH prop AS (
    INSERT INTO properties AS p (agent_id, lead_id, address, facts)
    VALUES ($1, $2, $3, $4::jsonb)
    ON CONFLICT (agent_id, lead_id, address) DO UPDATE SET facts = p.facts || EXCLUDED.facts
    RETURNING id
), saved AS (
    INSERT INTO risk_assessments (agent_id, lead_id, property_id, kind, idempotency_key, result)
    SELECT $1, $2, prop.id, 'water', $5, $6::jsonb FROM prop
    ON CONFLICT (agent_id, kind, idempotency_key) DO NOTHING
    RETURNING id, created_at
), finding AS (
    SELECT id, created_at FROM saved
    UNION ALL
    SELECT id, created_at FROM risk_assessments r
     WHERE r.agent_id = $1 AND r.kind = 'water' AND r.idempotency_key = $5
    LIMIT 1
), priced AS (
    SELECT f.id AS finding_id, f.created_at, price.id AS price_id, price.unit_price_usd
      FROM finding f
      LEFT JOIN LATERAL price_in_force($1, 'water_lookup', (f.created_at AT TIME ZONE $8)::date) price ON true
), usage AS (
    INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                     provider_cost_usd, occurred_at, idempotency_key, metadata)
    SELECT $1, 'water_lookup', 1, p.unit_price_usd, p.unit_price_usd, NULL, p.created_at, $5,
           $7::jsonb || jsonb_build_object('risk_assessment_id', p.finding_id,
                                           'pricing_config_id', p.price_id)
      FROM priced p
     WHERE p.price_id IS NOT NULL
    ON CONFLICT (agent_id, metric_type, idempotency_key) DO NOTHING
    RETURNING 1
)
SELECT p.finding_id, p.price_id IS NOT NULL AS priced, EXISTS (SELECT 1 FROM usage) AS written
  FROM priced p`;

function taskList(layer) {
  return {
    noop: async () => {},
    // What our water_lookup job does: ask the layer, summarize, write the effect (one statement,
    // its own transaction, on a connection of graphile's pool).
    water_lookup: async (p, helpers) => {
      let answer;
      if (HTTP) {
        const q = new URLSearchParams({ f: "json", where: "1=1", geometry: `${p.longitude},${p.latitude}`,
          geometryType: "esriGeometryPoint", inSR: "4326", spatialRel: "esriSpatialRelIntersects",
          outFields: "REGISTRY_ID,OWNER_NAME,WELL_DEPTH,WATER_LEVEL,WATER_USE,INSTALLED,WELL_CANCELLED",
          distance: String(p.radius_m), units: "esriSRUnit_Meter", returnGeometry: "true",
          outSR: "4326", resultOffset: "0", resultRecordCount: "1000" });
        answer = await (HTTP_CLIENT === "fetch" ? getWithFetch : getWithHttp)(`${layer}/query?${q}`);
      } else {
        answer = JSON.parse(WELLS);
      }
      const summary = summarize(answer, p.latitude, p.longitude);
      const waterSource = summary.nearest?.distance_m <= 150 ? "private_well" : "no_registered_well";
      const result = { latitude: p.latitude, longitude: p.longitude, address: p.address, summary,
        radius_m: p.radius_m };
      const values = [p.agent_id, p.lead_id, p.address, JSON.stringify({ water_source: waterSource }),
        `tool_call:${p.tool_call_id}`, JSON.stringify(result),
        JSON.stringify({ well_count: summary.well_count, tool_call_id: p.tool_call_id }), BILLING_TIMEZONE];
      const { rows } = await helpers.withPgClient((c) =>
        c.query({ name: "write_effect", text: WRITE_EFFECT, values }));
      if (!rows[0]?.finding_id) throw new Error("finding was being saved concurrently");
      if (!rows[0].priced) throw new Error("no water_lookup price in force");
    },
  };
}

/** Our schema: every migrations/*.up.sql in order, each in a transaction, then seeds/*.sql. */
async function migrate(db) {
  const skipped = [];
  const files = readdirSync(`${REPO}migrations`).filter((f) => f.endsWith(".up.sql")).sort();
  for (const f of files) {
    const sql = readFileSync(`${REPO}migrations/${f}`, "utf8");
    try {
      await db.query(`BEGIN;\n${sql}\n;COMMIT;`);
    } catch (e) {
      await db.query("ROLLBACK");
      // The apalis queue's own schema is not here (graphile brings its own queue): migrations
      // that only tune apalis.* are skipped, by name, anything else stops the bench.
      if (e.code === "3F000" && /apalis\./.test(e.message + sql)) skipped.push(f);
      else throw new Error(`${f}: ${e.message}`);
    }
  }
  for (const f of readdirSync(`${REPO}seeds`).filter((f) => f.endsWith(".sql")).sort()) {
    await db.query(readFileSync(`${REPO}seeds/${f}`, "utf8"));
  }
  return { applied: files.length - skipped.length, skipped };
}

async function main() {
  const name = `am_graphile_${process.pid}_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${name}"`);
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  const connectionString = url.toString();
  const db = new pg.Client({ connectionString });
  let utils, stand;
  const cleanup = async () => {
    await utils?.release().catch(() => {});
    await db.end().catch(() => {});
    agent.destroy();
    stand?.server.close();
    await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).catch(() => {});
    await admin.end().catch(() => {});
  };
  process.once("SIGINT", () => cleanup().finally(() => process.exit(130)));
  try {
    await db.connect();
    const { applied, skipped } = await migrate(db);
    // 1,000 leads over the five seeded agents, as the calls bench's open loop leaves them.
    const { rows: leads } = await db.query(`
      INSERT INTO leads (agent_id, phone)
      SELECT a.id, '+1928555' || lpad(g::text, 4, '0')
        FROM generate_series(0, 999) g
        JOIN (SELECT id, row_number() OVER (ORDER BY email) - 1 AS k FROM agents) a ON a.k = g % 5
      RETURNING agent_id, id`);
    await runMigrations({ connectionString, logger });
    utils = await makeWorkerUtils({ connectionString, logger });
    stand = HTTP ? await standIn() : null;
    const tasks = taskList(stand?.layer);

    const [pgVersion] = (await db.query("SHOW server_version")).rows.map((r) => r.server_version);
    console.log(`graphile-worker ${gwVersion} on Node ${process.version}, PostgreSQL ${pgVersion}, ` +
      `${os.cpus().length} cores; ${JOBS} jobs, concurrency ${CONCURRENCY}, ${ROUNDS} rounds, ` +
      `localQueue.size ${LOCAL_QUEUE} / ${LARGE_QUEUE} (batchedLarge), batch delay ${BATCH_DELAY} ms, ` +
      `pool ${POOL} (default: 10), stand-in HTTP ${HTTP ? `on (${HTTP_CLIENT})` : "off"}`);
    console.log(`schema: ${applied} migrations applied, skipped (apalis only): ${skipped.join(", ") || "none"}; ` +
      `${leads.length} leads`);
    console.log(`before: ${await busy()}`);

    const results = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const shift = (round - 1) % CONFIG_NAMES.length;
      const order = [...CONFIG_NAMES.slice(shift), ...CONFIG_NAMES.slice(0, shift)];
      for (const kind of KINDS) {
        for (const config of order) {
          let r;
          for (let attempt = 1; ; attempt++) {
            r = await timed({ kind, config, round, attempt, db, utils, connectionString, dbName: name,
              tasks, leads });
            if (!WAIT_QUIET || r.others <= 0.1 || attempt === 3) break;
            console.log(`  (round ${round} ${kind} ${config} discarded: ${fmt(r.rate, 0)} jobs/s while ` +
              `others used ${pct(r.others)} of the machine)`);
          }
          results.push(r);
          console.log(`round ${round}  ${kind.padEnd(7)}  ${config.padEnd(12)}  ${fmt(r.rate, 7)} jobs/s  ` +
            `${r.seconds.toFixed(2).padStart(6)} s  cpu/job ${fmt(r.machineUs, 5)} us machine, ` +
            `${fmt(r.nodeUs, 5)} us node  done ${r.done}/${JOBS}  errors ${r.errors}` +
            `${r.check ? `  ${r.check}` : ""}  busy ${pct(r.before)} before, others ${pct(r.others)} during`);
        }
      }
    }

    console.log("\nsummary (jobs/s per round in run order; cpu/job median over rounds, us)");
    for (const kind of KINDS) {
      for (const config of CONFIG_NAMES) {
        const rs = results.filter((r) => r.kind === kind && r.config === config);
        const rates = rs.map((r) => r.rate);
        console.log(`${kind.padEnd(7)}  ${config.padEnd(12)}  ${rates.map((x) => fmt(x, 6)).join("  ")}   ` +
          `range ${fmt(Math.min(...rates), 0)}-${fmt(Math.max(...rates), 0)}   cpu/job ` +
          `${fmt(median(rs.map((r) => r.machineUs)), 0)} machine, ${fmt(median(rs.map((r) => r.nodeUs)), 0)} node`);
      }
    }
    console.log(`after: ${await busy()}`);
  } finally {
    await cleanup();
  }
}

/** Enqueues JOBS jobs of `kind` (untimed), then times `config` from worker start until done. */
async function timed({ kind, config, round, attempt, db, utils, connectionString, dbName, tasks, leads }) {
  const tag = `gw_r${round}_${config}_a${attempt}_`;
  const identifier = kind === "noop" ? "noop" : "water_lookup";
  for (let first = 0; first < JOBS; first += ENQUEUE_BATCH) {
    const specs = [];
    for (let i = first; i < Math.min(first + ENQUEUE_BATCH, JOBS); i++) {
      const lead = leads[i % leads.length];
      const payload = kind === "noop" ? { n: i } : {
        agent_id: lead.agent_id, lead_id: lead.id, tool_call_id: `${tag}${i}`,
        latitude: 35.1983, longitude: -111.6513, radius_m: 1609,
        address: `${i % leads.length} N Humphreys St, Flagstaff, AZ`,
      };
      specs.push({ identifier, payload });
    }
    await utils.addJobs(specs);
  }
  // Same start for every run: the previous run's deleted rows gone, statistics fresh.
  await db.query("VACUUM ANALYZE graphile_worker._private_jobs");
  // Was anyone else using the machine just before? (Printed with the run; optionally waited out.)
  let before = await busyShare();
  for (const until = Date.now() + 600_000; WAIT_QUIET && before > 0.1 && Date.now() < until;) {
    await sleep(4000);
    before = await busyShare();
  }

  const events = new EventEmitter();
  let done = 0, errors = 0, allSeen;
  const seen = new Promise((ok) => (allSeen = ok));
  events.on("job:success", () => ++done >= JOBS && allSeen());
  events.on("job:error", () => errors++);
  const deadline = Date.now() + (60 + JOBS / 100) * 1000;

  const others0 = othersSeconds(dbName);
  const machine0 = machineSeconds(), node0 = process.cpuUsage(), t0 = performance.now();
  const runner = await run({ connectionString, concurrency: CONCURRENCY, noHandleSignals: true,
    taskList: tasks, logger, events, ...CONFIGS[config] });
  // Every job has run (events, no polling); then the table must be empty (completion may be
  // batched): checked every 5 ms.
  await Promise.race([seen, sleep(deadline - Date.now(), null, { ref: false })]);
  let left;
  for (;;) {
    left = (await db.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs")).rows[0].n;
    if (left === 0 || Date.now() > deadline) break;
    await sleep(5);
  }
  const seconds = (performance.now() - t0) / 1000;
  const node = process.cpuUsage(node0), machine1 = machineSeconds(), others1 = othersSeconds(dbName);
  await runner.stop();

  const finished = JOBS - left;
  let check = "";
  if (kind === "metered") {
    const { rows: [c] } = await db.query(
      `SELECT (SELECT count(*) FROM agent_usage_metrics WHERE starts_with(idempotency_key, $1))::int AS usage,
              (SELECT count(*) FROM risk_assessments WHERE starts_with(idempotency_key, $1))::int AS findings`,
      [`tool_call:${tag}`]);
    check = c.usage === JOBS && c.findings === JOBS ? "usage rows ok" : `MISMATCH usage ${c.usage} findings ${c.findings}`;
  }
  return {
    kind, config, round, done: finished, errors, check, seconds, before,
    others: (others1 - others0) / seconds / os.cpus().length,
    rate: finished / seconds,
    machineUs: ((machine1 - machine0) * 1e6) / Math.max(finished, 1),
    nodeUs: (node.user + node.system) / Math.max(finished, 1),
  };
}

const fmt = (x, w) => Math.round(x).toLocaleString("en-US").padStart(w);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

await main();
