// Drives the official Node `postmark` and `resend` SDKs with a message
// stream each (tests/suite/pools.rs): Postmark's `MessageStream: "broadcast"`
// and Resend's `X-Postline-Stream` header. Env: POSTLINE_HOST (host:port),
// POSTLINE_URL, KEY, FROM, TO. Prints one JSON object.
import postmark from "postmark";
import { Resend } from "resend";

const env = process.env;
const out = {};
const pm = new postmark.ServerClient(env.KEY, { requestHost: env.POSTLINE_HOST, useHttps: false });
out.pm_broadcast = await pm.sendEmail({
  From: env.FROM, To: env.TO, Subject: "pm broadcast", TextBody: "news", MessageStream: "broadcast",
});
out.pm_outbound = await pm.sendEmail({
  From: env.FROM, To: env.TO, Subject: "pm outbound", TextBody: "reset", MessageStream: "outbound",
});
const resend = new Resend(env.KEY, { baseUrl: env.POSTLINE_URL });
out.rs_broadcast = await resend.emails.send({
  from: env.FROM, to: [env.TO], subject: "resend broadcast", text: "news",
  headers: { "X-Postline-Stream": "broadcast" },
});
out.rs_default = await resend.emails.send({
  from: env.FROM, to: [env.TO], subject: "resend default", text: "reset",
});
console.log(JSON.stringify(out));
