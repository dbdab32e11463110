#!/usr/bin/env bash
# Postfix side by side (issue 7): the same count and size of messages
#   smtp-source -> a private Postfix instance -> smtp-sink
#   HTTP        -> Postline (API + worker)    -> the same smtp-sink
# each timed from the first submission until the last message is out of the
# queue (Postfix: its queue directories are empty; Postline: every row is
# recorded delivered). Prints both rates and their ratio.
#
#   deploy/bench-postfix.sh            # N=10000 messages of SIZE=10240 B, C=16 sessions
#   N=2000 SIZE=10240 C=16 deploy/bench-postfix.sh
#   SUBMISSION=1 deploy/bench-postfix.sh  # SMTP submission (issue 14): the
#                                       # time for smtp-source's messages to be
#                                       # accepted by Postfix's smtpd beside
#                                       # benches/submission.rs (16 lettre
#                                       # sessions, STARTTLS + AUTH) into Postline
#   OPENDKIM=1 deploy/bench-postfix.sh  # both sides DKIM-sign (RSA-2048,
#                                       # relaxed/relaxed): Postfix through
#                                       # OpenDKIM as a milter, Postline itself
#
# Installs postfix if missing (needs root, as apt-get does). The instance is
# private: its own config dir, queue and data dir in a temp dir, smtpd on a
# free loopback port, relaying everything to smtp-sink on another; the
# system postfix service is neither configured nor started. Everything is
# stopped and deleted on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${N:-10000}"
SIZE="${SIZE:-10240}"
C="${C:-16}"

log() { printf '[bench-postfix] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ ! -x /usr/sbin/postfix ] || [ ! -x /usr/sbin/smtp-source ]; then
  [ "$(id -u)" = 0 ] || die "postfix is not installed; run as root to install it"
  log "installing postfix (apt-get, no configuration)"
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq postfix >/dev/null
fi
[ "$(id -u)" = 0 ] || die "run as root: postfix -c starts a master process that needs it"

OPENDKIM="${OPENDKIM:-0}"
if [ "$OPENDKIM" = 1 ] && ! command -v opendkim >/dev/null; then
  log "installing opendkim (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq opendkim opendkim-tools >/dev/null
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PF="$(mktemp -d /tmp/postline-postfix-XXXXXX)"
chmod 755 "$PF"
SINK_PORT="$(free_port)"
PF_PORT="$(free_port)"
SINK_PID=""
DKIM_PID=""
DK=""
cleanup() {
  /usr/sbin/postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
  [ -n "$DKIM_PID" ] && kill "$DKIM_PID" 2>/dev/null || true
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
  rm -rf "$PF"
  [ -n "$DK" ] && rm -rf "$DK"
  return 0
}
trap cleanup EXIT

# The sink: Postfix's own load tool. As root it must drop privileges (-u).
/usr/sbin/smtp-sink -u nobody 127.0.0.1:"$SINK_PORT" 1000 &
SINK_PID=$!

mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cat > "$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydomain = localdomain
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_transport = error:local delivery disabled
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$SINK_PORT
smtp_tls_security_level = none
smtpd_tls_security_level = none
default_destination_concurrency_limit = $C
smtp_destination_concurrency_limit = $C
default_process_limit = $((C * 2 + 10))
message_size_limit = 52428800
biff = no
EOF
if [ "$OPENDKIM" = 1 ]; then
  # OpenDKIM signing bench.example (the smtp-source sender's domain) with a
  # fresh RSA-2048 key, relaxed/relaxed, on a loopback milter port.
  MILTER_PORT="$(free_port)"
  # OpenDKIM refuses a config or key below a world-writable directory such
  # as /tmp: its files live in a root-only directory of their own.
  DK="$(mktemp -d /run/postline-dkim-XXXXXX)"
  chmod 755 "$DK"
  opendkim-genkey -b 2048 -d bench.example -s pl -D "$DK"
  chown -R opendkim "$DK" 2>/dev/null || true
  cat > "$DK/opendkim.conf" <<DKIMCONF
Syslog no
Mode s
Domain bench.example
Selector pl
KeyFile $DK/pl.private
Canonicalization relaxed/relaxed
SignHeaders From,To,Cc,Subject,Date,Message-ID,MIME-Version,Content-Type,Reply-To
Socket inet:$MILTER_PORT@127.0.0.1
UserID opendkim
PidFile $DK/opendkim.pid
Background no
DKIMCONF
  opendkim -x "$DK/opendkim.conf" -f &
  DKIM_PID=$!
  {
    echo "smtpd_milters = inet:127.0.0.1:$MILTER_PORT"
    echo "non_smtpd_milters = inet:127.0.0.1:$MILTER_PORT"
    echo "milter_default_action = tempfail"
  } >> "$PF/etc/main.cf"
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/"$MILTER_PORT") 2>/dev/null && break
    sleep 0.1
  done
  log "opendkim milter on 127.0.0.1:$MILTER_PORT signing bench.example"
fi

# The packaged master.cf, without chroot (the private queue has no copies of
# /etc files for a jail) and with smtpd on our loopback port only.
awk -v port="127.0.0.1:$PF_PORT" '
  /^#/ || /^$/ { print; next }
  /^[ \t]/ { print (skip ? "#" : "") $0; next }
  { skip = 0 }
  $1 == "smtp" && $2 == "inet" { $1 = port }
  $2 == "inet" && $1 != port { skip = 1; print "#" $0; next }
  { $5 = "n"; print }
' /usr/share/postfix/master.cf.dist > "$PF/etc/master.cf"

/usr/sbin/postfix -c "$PF/etc" check >/dev/null 2>&1 || /usr/sbin/postfix -c "$PF/etc" set-permissions >/dev/null 2>&1 || true
/usr/sbin/postfix -c "$PF/etc" start >/dev/null
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/"$PF_PORT") 2>/dev/null && break
  sleep 0.1
done
log "postfix on 127.0.0.1:$PF_PORT ($PF), smtp-sink on 127.0.0.1:$SINK_PORT; $N messages of $SIZE B, $C sessions"

queued() {
  find "$PF/queue/maildrop" "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" -type f 2>/dev/null | wc -l
}

start=$(date +%s.%N)
/usr/sbin/smtp-source -s "$C" -m "$N" -l "$SIZE" -f sender@bench.example -t rcpt@example.com 127.0.0.1:"$PF_PORT"
accepted=$(date +%s.%N)
deadline=$(( $(date +%s) + 600 ))
while [ "$(queued)" -gt 0 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "postfix queue not empty after 600 s"
  sleep 0.05
done
done_at=$(date +%s.%N)
deferred=$(find "$PF/queue/deferred" -type f | wc -l)
pf_accept=$(echo "$N / ($accepted - $start)" | bc -l)
pf_rate=$(echo "$N / ($done_at - $start)" | bc -l)
printf '%-34s %d in %.2f s: %.0f msg/s\n' "postfix accepted" "$N" "$(echo "$accepted - $start" | bc -l)" "$pf_accept"
printf '%-34s %d in %.2f s: %.0f msg/s (%d deferred)\n' "postfix delivered" "$N" "$(echo "$done_at - $start" | bc -l)" "$pf_rate" "$deferred"
/usr/sbin/postfix -c "$PF/etc" stop >/dev/null 2>&1 || true

if [ "${SUBMISSION:-0}" = 1 ]; then
  # smtp-source has no STARTTLS: Postfix's side is plaintext, Postline's TLS.
  out="$(POSTLINE_BENCH_RELAY_PORT="$SINK_PORT" POSTLINE_BENCH_MESSAGES="$N" POSTLINE_BENCH_SIZE="$SIZE" \
    POSTLINE_BENCH_SESSIONS="$C" deploy/dev bench submission 2>&1)" || { echo "$out" >&2; die "postline run failed"; }
  echo "$out" | grep -E '^(postline submission|baseline|ratio)'
  pl_rate=$(echo "$out" | sed -n 's/^postline submission accepted .*: \([0-9]*\) msg\/s.*/\1/p')
  [ -n "$pl_rate" ] || { echo "$out" >&2; die "no postline figure"; }
  printf '%-34s %.2f (postline %s msg/s with STARTTLS vs postfix smtpd %.0f msg/s plaintext, accepted)\n' \
    "ratio submission / postfix" "$(echo "$pl_rate / $pf_accept" | bc -l)" "$pl_rate" "$pf_accept"
  exit 0
fi

# Postline: the load bench's side-by-side mode, relaying to the same sink.
# With OPENDKIM=1 Postline signs every message too (POSTLINE_BENCH_DKIM).
out="$(POSTLINE_BENCH_DKIM="$OPENDKIM" POSTLINE_BENCH_RELAY_PORT="$SINK_PORT" POSTLINE_BENCH_DELIVERY_MESSAGES="$N" \
  POSTLINE_BENCH_DELIVERY_SIZE="$SIZE" POSTLINE_BENCH_SESSIONS="$C" \
  deploy/dev bench load 2>&1)" || { echo "$out" >&2; die "postline run failed"; }
echo "$out" | grep -E '^postline (accepted|delivered)'
pl_rate=$(echo "$out" | sed -n 's/^postline delivered .*: \([0-9]*\) msg\/s.*/\1/p')
[ -n "$pl_rate" ] || { echo "$out" >&2; die "no postline figure"; }
printf '%-34s %.2f (postline %s msg/s vs postfix %.0f msg/s, end to end)\n' \
  "ratio postline / postfix" "$(echo "$pl_rate / $pf_rate" | bc -l)" "$pl_rate" "$pf_rate"
