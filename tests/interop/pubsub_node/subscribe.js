#!/usr/bin/env node
// An independent Pub/Sub API client: Node's @grpc/grpc-js, @grpc/proto-loader and avsc, none of
// the project's Python. It shows the emulator speaks the real protocol: it loads the .proto at
// run time, calls GetTopic, GetSchema, then Subscribe with one FetchRequest (EARLIEST,
// num_requested N) and asks for nothing more, decodes each payload with avsc from the schema
// JSON, and decodes the ChangeEventHeader bitmaps to field names with its own code.
//
//   node subscribe.js --proto wire/pubsub/pubsub_api.proto --address 127.0.0.1:8704 \
//       --ca .dev/certs/ca.pem --num 3 [--topic /data/OrderChangeEvent] [--timeout-ms 10000]
//
// The metadata comes from --accesstoken, --instanceurl, --tenantid, or else the environment's
// PUBSUB_ACCESSTOKEN, PUBSUB_INSTANCEURL, PUBSUB_TENANTID (the token is better in the
// environment: arguments are visible to every user of the machine).
//
// It reads until the first response without events (a keepalive) or the timeout, so events
// sent beyond what was requested would be counted in `received`, then cancels the call and
// prints one JSON line:
//
//   {"topic", "schema_id", "events": [{"replay_id_hex", "event_id", "entityName", "changeType",
//    "recordIds", "changedFields", "Status"?}], "received", "pending_after", "ended"}
//
// `pending_after` is the last response's pending_num_requested, `ended` "keepalive", "timeout"
// or "end" (the server closed the stream). A failed call exits 1 with the error on stderr.
"use strict";

const fs = require("node:fs");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const avro = require("avsc");

function options(argv) {
  const parsed = {};
  for (let i = 0; i < argv.length; i += 1) {
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!match) throw new Error(`unexpected argument ${argv[i]}`);
    parsed[match[1]] = match[2] !== undefined ? match[2] : argv[(i += 1)];
  }
  const env = (name) => parsed[name] || process.env[`PUBSUB_${name.toUpperCase()}`];
  const settings = {
    proto: parsed.proto,
    address: parsed.address,
    ca: parsed.ca,
    topic: parsed.topic || "/data/OrderChangeEvent",
    num: Number(parsed.num),
    timeoutMs: Number(parsed["timeout-ms"] || 10000),
    accesstoken: env("accesstoken"),
    instanceurl: env("instanceurl"),
    tenantid: env("tenantid"),
  };
  for (const [name, value] of Object.entries(settings)) {
    if (value === undefined || value === "" || Number.isNaN(value)) {
      throw new Error(`missing --${name}`);
    }
  }
  if (!Number.isInteger(settings.num) || settings.num < 1) throw new Error("--num must be >= 1");
  return settings;
}

// ---- the changed-field bitmaps ----------------------------------------------------------------

// The record type a field holds (itself, or the record in a ["null", record] union).
function recordOf(type) {
  if (type.typeName === "record") return type;
  const records = (type.types || []).filter((t) => t.typeName === "record");
  if (records.length !== 1) throw new Error(`field type ${type.typeName} is not a compound`);
  return records[0];
}

function marked(hex, count) {
  const bits = BigInt(hex);
  const indexes = [];
  for (let i = 0; bits >> BigInt(i) > 0n; i += 1) {
    if ((bits >> BigInt(i)) & 1n) {
      if (i >= count) throw new Error(`bit ${i} of ${hex} is past the ${count} fields`);
      indexes.push(i);
    }
  }
  return indexes;
}

// Salesforce's bitmaps: "0x<hex>" sets bit i for top-level field i of the schema; "<i>-0x<hex>"
// sets bit j for component j of the compound field at index i, named "Parent.Component". A
// changed component also sets its compound's own bit; the compound is then named by its
// components alone (as CometD names them).
function fieldNames(recordType, bitmaps) {
  const fields = recordType.fields;
  const names = [];
  for (const entry of bitmaps) {
    const match = /^(?:(\d+)-)?(0x[0-9A-Fa-f]+)$/.exec(entry);
    if (!match) throw new Error(`not a bitmap entry: ${entry}`);
    if (match[1] === undefined) {
      for (const i of marked(match[2], fields.length)) names.push(fields[i].name);
      continue;
    }
    const parent = fields[Number(match[1])];
    if (parent === undefined) throw new Error(`no field ${match[1]} for ${entry}`);
    const components = recordOf(parent.type).fields;
    for (const j of marked(match[2], components.length)) {
      names.push(`${parent.name}.${components[j].name}`);
    }
  }
  const compounds = new Set(names.filter((n) => n.includes(".")).map((n) => n.split(".")[0]));
  return names.filter((name) => !compounds.has(name));
}

// ---- the calls --------------------------------------------------------------------------------

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

async function main() {
  const settings = options(process.argv.slice(2));
  const definition = protoLoader.loadSync(settings.proto, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const { PubSub } = grpc.loadPackageDefinition(definition).eventbus.v1;
  const client = new PubSub(
    settings.address,
    grpc.credentials.createSsl(fs.readFileSync(settings.ca)),
    // Straight to the address, whatever proxy the environment names.
    { "grpc.enable_http_proxy": 0 },
  );
  const metadata = new grpc.Metadata();
  metadata.set("accesstoken", settings.accesstoken);
  metadata.set("instanceurl", settings.instanceurl);
  metadata.set("tenantid", settings.tenantid);

  const topic = await unary(client, "GetTopic", { topic_name: settings.topic }, metadata);
  if (!topic.can_subscribe) throw new Error(`cannot subscribe to ${settings.topic}`);
  // Avro types by schema id: the topic's now, any other an event names when it comes.
  const types = new Map();
  const typeOf = async (schemaId) => {
    if (!types.has(schemaId)) {
      const info = await unary(client, "GetSchema", { schema_id: schemaId }, metadata);
      // Without `logicalTypes`, avsc reads timestamp-millis and date as their long and int.
      types.set(schemaId, avro.Type.forSchema(JSON.parse(info.schema_json)));
    }
    return types.get(schemaId);
  };
  if (topic.schema_id) await typeOf(topic.schema_id);

  const responses = await subscribe(client, metadata, settings);
  const events = [];
  for (const response of responses.list) {
    for (const consumed of response.events) {
      const type = await typeOf(consumed.event.schema_id);
      const record = type.fromBuffer(consumed.event.payload); // throws on trailing bytes
      const header = record.ChangeEventHeader;
      const event = {
        replay_id_hex: Buffer.from(consumed.replay_id).toString("hex"),
        event_id: consumed.event.id,
        entityName: header.entityName,
        changeType: header.changeType,
        recordIds: header.recordIds,
        changedFields: fieldNames(type, header.changedFields),
      };
      if (type.fields.some((f) => f.name === "Status")) event.Status = record.Status;
      events.push(event);
    }
  }
  const last = responses.list[responses.list.length - 1];
  client.close();
  return {
    topic: topic.topic_name,
    schema_id: topic.schema_id,
    events,
    received: events.length,
    pending_after: last ? last.pending_num_requested : null,
    ended: responses.ended,
  };
}

// One Subscribe: a single FetchRequest, then responses until a keepalive, the end or the timeout.
function subscribe(client, metadata, settings) {
  return new Promise((resolve, reject) => {
    const list = [];
    const call = client.Subscribe(metadata);
    let done = false;
    const finish = (ended) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      call.cancel();
      resolve({ list, ended });
    };
    const timer = setTimeout(() => finish("timeout"), settings.timeoutMs);
    call.on("data", (response) => {
      if (done) return;
      list.push(response);
      if (response.events.length === 0) finish("keepalive");
    });
    // A stream the server ends with OK; any other status comes as an error.
    call.on("status", (status) => {
      if (status.code === grpc.status.OK) finish("end");
    });
    call.on("error", (error) => {
      if (done) return; // our own cancel
      done = true;
      clearTimeout(timer);
      reject(error);
    });
    call.write({
      topic_name: settings.topic,
      replay_preset: "EARLIEST",
      num_requested: settings.num,
    });
  });
}

main().then(
  (result) => process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0)),
  (error) => {
    const code = error.code !== undefined ? ` (gRPC status ${error.code})` : "";
    process.stderr.write(`subscribe.js: ${error.message}${code}\n`, () => process.exit(1));
  },
);
