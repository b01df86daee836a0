/**
 * The EMR domain events Projector consumes, for the services that publish
 * them: the types (generated from `schema/events.schema.json`), a builder
 * that fills the envelope's metadata, validation against the same schema,
 * and `publish` over JetStream with the event id as `Nats-Msg-Id`.
 */
import { randomUUID } from "node:crypto";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ErrorObject } from "ajv";
import addFormatsPlugin from "ajv-formats";
import type { JetStreamClient, PubAck } from "nats";

import { eventSchema } from "./generated/schema.js";
import type { EmrEvent, Envelope, EventType, PayloadOf } from "./generated/events.js";

export * from "./generated/events.js";

/** The payload shape version the builder stamps when none is given. */
export const EVENT_VERSION = 1;

/** What a publisher says about an event; the builder fills the rest. */
export interface EventInput<T extends EventType> {
  /** The patient the event is about. */
  patientId: string;
  /** Who caused it (HIPAA). */
  userId: string;
  /** What kind of system publishes it. */
  portalType: Envelope["portalType"];
  /** The event-specific fields. */
  payload: PayloadOf[T];
  /** Ties the events of one workflow together. */
  correlationId?: string;
  /** The FHIR resource the payload corresponds to. */
  fhirResourceType?: string;
  /** Defaults to a random UUID; give one to make a retry a duplicate. */
  eventId?: string;
  /** Defaults to now. */
  timestamp?: Date | string;
  /** Defaults to {@link EVENT_VERSION}. */
  eventVersion?: number;
}

/** An event of `eventType`, with `eventId`, `timestamp` and `eventVersion` filled. */
export function buildEvent<T extends EventType>(eventType: T, input: EventInput<T>): EmrEvent<T> {
  const { eventId, timestamp, eventVersion, ...rest } = input;
  const at = timestamp ?? new Date();
  return {
    ...rest,
    eventType,
    eventId: eventId ?? randomUUID(),
    timestamp: typeof at === "string" ? at : at.toISOString(),
    eventVersion: eventVersion ?? EVENT_VERSION,
  } as EmrEvent<T>;
}

/** An event the schema refuses, with every reason. */
export class InvalidEventError extends Error {
  /** Each reason: where in the event, and what is wrong. */
  readonly errors: string[];

  constructor(errors: string[]) {
    super(`invalid event: ${errors.join("; ")}`);
    this.name = "InvalidEventError";
    this.errors = errors;
  }
}

const addFormats = addFormatsPlugin as unknown as (ajv: Ajv2020) => Ajv2020;
const ajv = addFormats(new Ajv2020({ allErrors: true, strict: false }));
// The schema's number formats, as Rust's serde writes them.
ajv.addFormat("uint32", { type: "number", validate: (n: number) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff });
ajv.addFormat("double", { type: "number", validate: (n: number) => Number.isFinite(n) });
const check = ajv.compile(eventSchema);

function describe(error: ErrorObject): string {
  return `${error.instancePath || "/"} ${error.message ?? "is invalid"}`;
}

/** Whether `event` is an event the schema accepts; throws {@link InvalidEventError} with the reasons if not. */
export function validate(event: unknown): asserts event is EmrEvent {
  if (!check(event)) {
    throw new InvalidEventError((check.errors ?? []).map(describe));
  }
}

/** Where and how {@link publish} sends. */
export interface PublishOptions {
  /** Prepended to the subject (Projector's `SUBJECT_PREFIX`). */
  subjectPrefix?: string;
  /** How long to wait for the stream's acknowledgement (ms). */
  timeout?: number;
}

/**
 * Validates `event`, then publishes it on its `eventType` subject with
 * `Nats-Msg-Id` = `eventId` and waits for JetStream's acknowledgement.
 * An invalid event is refused before anything is sent; a duplicate
 * (the same `eventId` within the stream's window) is acknowledged with
 * `duplicate` set and stored once.
 */
export async function publish(js: JetStreamClient, event: EmrEvent, options: PublishOptions = {}): Promise<PubAck> {
  validate(event);
  const subject = `${options.subjectPrefix ?? ""}${event.eventType}`;
  const data = new TextEncoder().encode(JSON.stringify(event));
  return js.publish(subject, data, { msgID: event.eventId, timeout: options.timeout });
}
