// Drives the official Node `postmark` SDK against Postline (tests/suite/compat.rs).
// Env: POSTLINE_HOST (host:port), KEY, FROM, TO. Prints one JSON object.
const postmark = require("postmark");

async function main() {
  const env = process.env;
  const opts = { requestHost: env.POSTLINE_HOST, useHttps: false };
  const client = new postmark.ServerClient(env.KEY, opts);
  const out = {};
  out.sent = await client.sendEmail({
    From: env.FROM, To: `${env.TO}, "Doe, Jane" <jane@dest.example>`, Subject: "postmark.js",
    TextBody: "hi", HtmlBody: "<p>hi</p>", Tag: "welcome", Metadata: { plan: "pro" },
    Headers: [{ Name: "X-Campaign", Value: "spring" }],
    Attachments: [{ Name: "p.txt", Content: Buffer.from("postmark").toString("base64"), ContentType: "text/plain" }],
    TrackOpens: true, MessageStream: "outbound",
  });
  out.batch = await client.sendEmailBatch([
    { From: env.FROM, To: env.TO, Subject: "pm batch 1", TextBody: "one" },
    { From: env.FROM, To: env.TO, Subject: "pm batch 2", TextBody: "two" },
  ]);
  // One bad message in the middle: the SDK gets a 200 with one entry each.
  out.mixed = await client.sendEmailBatch([
    { From: env.FROM, To: env.TO, Subject: "pm mixed 1", TextBody: "one" },
    { From: "not an address", To: env.TO, Subject: "pm mixed 2", TextBody: "two" },
    { From: env.FROM, To: env.TO, Subject: "pm mixed 3", TextBody: "three" },
  ]);
  try {
    await client.sendEmail({ From: "not an address", To: env.TO, Subject: "x", TextBody: "x" });
  } catch (e) {
    out.invalid = { name: e.name, code: e.code, status: e.statusCode, message: e.message };
  }
  try {
    await new postmark.ServerClient("not-a-key", opts).sendEmail({ From: env.FROM, To: env.TO, Subject: "x", TextBody: "x" });
  } catch (e) {
    out.bad_key = { name: e.name, code: e.code, status: e.statusCode, message: e.message };
  }
  console.log(JSON.stringify(out));
}
main().catch((e) => { console.error(e); process.exit(1); });
