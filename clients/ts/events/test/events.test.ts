// The package's tests, with node's own runner. The first group needs
// nothing; the second talks to the real NATS and a running Projector host,
// whose addresses the Rust integration test that starts them passes in
// (`events_package::` in host/tests): NATS_URL, STREAM_NAME, SUBJECT_PREFIX,
// HOST_URL and TOKEN.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { connect, type NatsConnection } from "nats";

import { buildEvent, EVENT_TYPES, InvalidEventError, publish, validate, type EmrEvent } from "../src/index.js";

const fixture = (name: string) => new URL(`../../../../../fixtures/${name}`, import.meta.url);

function newPatient(patientId: string) {
  return buildEvent("patient.created", {
    patientId,
    userId: "u-registration-1",
    portalType: "admin",
    fhirResourceType: "Patient",
    payload: { mrn: `MRN-${patientId}`, name: { given: "Ada", family: "Lovelace" }, birthDate: "1985-12-10", gender: "female" },
  });
}

test("the builder fills eventId, timestamp and eventVersion, and the schema accepts the result", () => {
  const event = newPatient("p-ts-1");
  assert.match(event.eventId, /^[0-9a-f-]{36}$/);
  assert.ok(!Number.isNaN(Date.parse(event.timestamp)));
  assert.equal(event.eventVersion, 1);
  assert.equal(event.eventType, "patient.created");
  validate(event);
});

test("every event of the seed's flow and the later fixtures is valid", async () => {
  for (const name of ["seed-flow.jsonl", "later-events.jsonl"]) {
    const lines = (await readFile(fixture(name), "utf8")).split("\n").filter((l) => l.trim());
    assert.ok(lines.length > 0);
    const types = new Set<string>();
    for (const line of lines) {
      const event = JSON.parse(line);
      validate(event);
      types.add(event.eventType);
    }
    for (const type of types) assert.ok(EVENT_TYPES.includes(type as never), type);
  }
});

test("an invalid event is refused with every reason", () => {
  const event = newPatient("p-ts-2") as Record<string, unknown>;
  delete event.patientId;
  (event.payload as Record<string, unknown>).gender = "robot";
  assert.throws(
    () => validate(event),
    (e: unknown) => {
      assert.ok(e instanceof InvalidEventError);
      assert.ok(e.errors.some((r) => r.includes("patientId")), e.errors.join("; "));
      assert.ok(e.errors.some((r) => r.startsWith("/payload/gender")), e.errors.join("; "));
      return true;
    },
  );
  assert.throws(() => validate({ ...newPatient("p-ts-3"), eventType: "patient.teleported" }), InvalidEventError);
});

const live = ["NATS_URL", "STREAM_NAME", "SUBJECT_PREFIX", "HOST_URL", "TOKEN"].every((v) => process.env[v]);

async function chart(patientId: string): Promise<{ status: number; body: Record<string, any> }> {
  const response = await fetch(`${process.env.HOST_URL}/api/aggregate/patients/${patientId}`, {
    headers: { authorization: `Bearer ${process.env.TOKEN}` },
  });
  return { status: response.status, body: await response.json() };
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const found = await probe();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("against NATS and a host", { skip: live ? false : "NATS_URL, STREAM_NAME, SUBJECT_PREFIX, HOST_URL and TOKEN not set" }, async (t) => {
  const nc: NatsConnection = await connect({ servers: process.env.NATS_URL });
  t.after(() => nc.close());
  const js = nc.jetstream();
  const jsm = await nc.jetstreamManager();
  const options = { subjectPrefix: process.env.SUBJECT_PREFIX };
  const stream = process.env.STREAM_NAME!;

  await t.test("published from TypeScript, the events change the patient's chart", async () => {
    const created = newPatient("p-ts-live");
    const ack = await publish(js, created, options);
    assert.equal(ack.stream, stream);
    assert.equal(ack.duplicate, false);
    const allergy: EmrEvent<"patient.allergy.added"> = buildEvent("patient.allergy.added", {
      patientId: "p-ts-live",
      userId: "u-dr-ts",
      portalType: "provider",
      payload: {
        allergyId: "alg-ts-1",
        substance: { system: "http://snomed.info/sct", code: "764146007", display: "Penicillin" },
        reaction: "Anaphylaxis",
        severity: "severe",
        criticality: "high",
      },
    });
    await publish(js, allergy, options);
    const body = await eventually("the chart with the allergy", async () => {
      const { status, body } = await chart("p-ts-live");
      return status === 200 && body.allergies?.length === 1 ? body : undefined;
    });
    assert.equal(body.mrn, "MRN-p-ts-live");
    assert.equal(body.name.family, "Lovelace");
    assert.equal(body.allergies[0].criticality, "high");

    // The same event again is a duplicate: acknowledged, stored once.
    const again = await publish(js, created, options);
    assert.equal(again.duplicate, true);
    assert.equal(again.seq, ack.seq);
  });

  await t.test("an invalid event is refused before it is sent", async () => {
    const before = (await jsm.streams.info(stream)).state.messages;
    const invalid = { ...newPatient("p-ts-invalid"), payload: { mrn: 42 } } as unknown as EmrEvent;
    await assert.rejects(publish(js, invalid, options), InvalidEventError);
    const after = (await jsm.streams.info(stream)).state.messages;
    assert.equal(after, before);
    const { status } = await chart("p-ts-invalid");
    assert.equal(status, 404);
  });
});
