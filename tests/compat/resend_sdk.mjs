// Drives the official Node `resend` SDK against Postline (tests/suite/compat.rs).
// Env: POSTLINE_URL (base URL, with a trailing slash on purpose), KEY, FROM,
// TO, LATER and LATER2 (RFC 3339 times). Prints one JSON object of results.
import { Resend } from "resend";

const env = process.env;
const resend = new Resend(env.KEY, { baseUrl: env.POSTLINE_URL });
const out = {};

const sent = await resend.emails.send({
  from: env.FROM,
  to: [env.TO],
  subject: "node resend",
  html: "<p>hi</p>",
  text: "hi",
  tags: [{ name: "sdk", value: "node" }],
  attachments: [
    { filename: "a.txt", content: Buffer.from("node buffer") },
    { filename: "b.txt", content: Buffer.from("node base64").toString("base64") },
  ],
}, { idempotencyKey: "node-send-1" });
out.sent = sent;
out.replayed = await resend.emails.send({
  from: env.FROM,
  to: [env.TO],
  subject: "node resend",
  html: "<p>hi</p>",
  text: "hi",
  tags: [{ name: "sdk", value: "node" }],
  attachments: [
    { filename: "a.txt", content: Buffer.from("node buffer") },
    { filename: "b.txt", content: Buffer.from("node base64").toString("base64") },
  ],
}, { idempotencyKey: "node-send-1" });
out.batch = await resend.batch.send([
  { from: env.FROM, to: env.TO, subject: "node batch 1", text: "one" },
  { from: env.FROM, to: env.TO, subject: "node batch 2", text: "two" },
]);
out.got = await resend.emails.get(sent.data.id);
out.list = await resend.emails.list({ limit: 2 });
const scheduled = await resend.emails.send({
  from: env.FROM, to: env.TO, subject: "node scheduled", text: "later", scheduledAt: env.LATER,
});
out.scheduled = scheduled;
out.updated = await resend.emails.update({ id: scheduled.data.id, scheduledAt: env.LATER2 });
out.got_scheduled = await resend.emails.get(scheduled.data.id);
out.canceled = await resend.emails.cancel(scheduled.data.id);
out.cancel_again = await resend.emails.cancel(scheduled.data.id);
out.invalid = await resend.emails.send({ from: "not an address", to: env.TO, subject: "x", text: "x" });
out.missing = await resend.emails.get("00000000-0000-4000-8000-000000000000");
out.bad_key = await new Resend("re_not_a_key", { baseUrl: env.POSTLINE_URL })
  .emails.send({ from: env.FROM, to: env.TO, subject: "x", text: "x" });
console.log(JSON.stringify(out));
